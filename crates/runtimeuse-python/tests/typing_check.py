"""Checked by `mypy --strict` in CI (not run): the package's public API is typed (py.typed,
_native.pyi), so a user's program that misuses it fails the check. See `.ci/run`."""

import pydantic

from runtimeuse_rs import (
    ArtifactUploadRequestMessageInterface,
    ArtifactUploadResult,
    AssistantMessageInterface,
    CommandExecutionResult,
    CommandInterface,
    CommandOutputMessageInterface,
    ExecuteCommandsOptions,
    QueryOptions,
    QueryResult,
    RuntimeUseClient,
    SyncRuntimeUseClient,
)


class Answer(pydantic.BaseModel):
    answer: int


async def on_assistant(message: AssistantMessageInterface) -> None:
    print(" ".join(message.text_blocks))


def on_output(message: CommandOutputMessageInterface) -> None:
    print(message.stream, message.text)


def upload(request: ArtifactUploadRequestMessageInterface) -> ArtifactUploadResult:
    return ArtifactUploadResult(presigned_url=f"https://bucket/{request.filename}", content_type="text/plain")


async def run(url: str) -> str:
    client = RuntimeUseClient(url, idle_timeout=120.0, connect_timeout=10.0)
    result: QueryResult = await client.query(
        "hi",
        QueryOptions(system_prompt="", model="gpt-4o", on_assistant_message=on_assistant, output_type=Answer),
    )
    async with client.session() as session:
        batch: CommandExecutionResult = await session.execute_commands(
            [CommandInterface(command="ls")],
            ExecuteCommandsOptions(on_command_output=on_output, artifacts_dirs=["/out"], on_artifact_upload_request=upload),
        )
        session.abort()
    assert batch.results[0].exit_code == 0
    return result.data.type


def run_blocking(url: str) -> int:
    client = SyncRuntimeUseClient(url, keepalive_interval=5.0)
    with client.session() as session:
        return session.execute_commands([CommandInterface(command="true")], ExecuteCommandsOptions()).results[0].exit_code
