"""The first owner of a resumable session, for the hand-off tests (`test_resume.py`): starts a
command batch with `resume=True`, writes a resume token from inside its first output callback,
reads on until a line `half`, then waits to be killed (its session is never closed).

`python resume_child.py URL COMMAND TOKEN_FILE` prints `seen <json string>` (the output handed
out when the token was taken) and then `ready`."""

import json
import sys
import threading

from runtimeuse_rs import ExecuteCommandsOptions, SyncRuntimeUseClient

url, command, token_file = sys.argv[1:4]
seen: list[str] = []
tokened = False
half = threading.Event()


def on_output(message) -> None:
    global tokened
    seen.append(message.text)
    if not tokened:
        with open(token_file, "w") as f:
            f.write(session.resume_token())
        print("seen " + json.dumps("".join(seen)), flush=True)
        tokened = True
    if any(line == "half" for line in "".join(seen).splitlines()):
        if not half.is_set():
            half.set()
            print("ready", flush=True)
            # Never returns: the request stays in flight until the process is killed.
            threading.Event().wait()


client = SyncRuntimeUseClient(url, resume=True)
with client.session() as session:
    session.execute_commands([{"command": command}], ExecuteCommandsOptions(on_command_output=on_output))
