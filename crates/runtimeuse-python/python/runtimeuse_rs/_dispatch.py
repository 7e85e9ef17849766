"""One request's items, turned into the upstream client's behaviour: callbacks (plain or
async) in order, artifact answers, the result or the exception. Shared by the async and the
blocking clients and by both kinds of transport."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import Any, Awaitable, Callable

from . import _native
from .exceptions import (
    AgentRuntimeError,
    CallbackTimeoutError,
    CancelledException,
    ConnectTimeoutError,
    IdleTimeoutError,
    ProtocolError,
    RequestTimeoutError,
    RuntimeConnectionError,
    RuntimeUseError,
)
from .types import (
    ArtifactUploadRequestMessageInterface,
    CommandInterface,
    RuntimeEnvironmentDownloadableInterface,
    AssistantMessageInterface,
    CommandExecutionResult,
    CommandOutputMessageInterface,
    CommandResultItem,
    QueryResult,
    StructuredOutputResult,
    TextResult,
)

logger = logging.getLogger("runtimeuse_rs")

# The native module builds these two per frame (without validation, as `construct` here) and
# hands them out as items of their own.
_native.set_models(CommandOutputMessageInterface, AssistantMessageInterface)
_Output = CommandOutputMessageInterface
_Assistant = AssistantMessageInterface

# Codes of the native module's tuple items (src/convert.rs).
ARTIFACT, DONE, FAILED, ENDED = 2, 3, 4, 5

_new = object.__new__
_set = object.__setattr__


def construct(cls: Any, values: dict[str, Any]) -> Any:
    """A model instance from values the Rust client already checked, without validation (as
    pydantic's ``model_construct``, at a fraction of its cost: these run once per frame)."""
    m = _new(cls)
    _set(m, "__dict__", values)
    _set(m, "__pydantic_fields_set__", set(values))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m


_KINDS: dict[str, type[RuntimeUseError]] = {
    "timeout": RequestTimeoutError,
    "idle_timeout": IdleTimeoutError,
    "callback_timeout": CallbackTimeoutError,
    "connect_timeout": ConnectTimeoutError,
    "connection": RuntimeConnectionError,
}


def exception(parts: tuple[str, str, dict[str, Any]], cancelled_message: str) -> Exception:
    """The exception for a native error ``(kind, message, details)``."""
    kind, message, details = parts
    if kind == "runtime":
        return AgentRuntimeError(details["error"], metadata=details.get("metadata"))
    if kind == "cancelled":
        return CancelledException(cancelled_message)
    if kind == "usage":
        return ValueError(message)
    if kind == "idle_timeout":
        # The upstream's words (its number as Python writes it).
        message = f"No message received from agent runtime for {details['idle_timeout']}s"
    cls = _KINDS.get(kind, ProtocolError)
    return cls(message, metadata=details or None)


def from_native(err: BaseException, cancelled_message: str = "cancelled") -> Exception:
    """The exception for a ``NativeError`` raised by the native module (its args are
    ``(kind, message, details)``)."""
    kind, message, details = err.args
    return exception((kind, message, details), cancelled_message)


_TIMEOUT_TYPES = {
    "on_assistant_message": "assistant_callback_timeout",
    "on_artifact_upload_request": "artifact_upload_callback_timeout",
}


def _limit_error(name: str, limit: float) -> CallbackTimeoutError:
    """A callback's limit passed (its caller adds what the callback was handling: the
    upstream's fields)."""
    return CallbackTimeoutError(
        f"{name} callback timed out",
        metadata={"timeout_type": _TIMEOUT_TYPES[name], "timeout": limit},
    )


class Request:
    """One call's dispatcher. ``run`` consumes items from ``next_items`` until the terminal.

    ``blocking``: callbacks must not suspend (the blocking client drives ``run`` without an
    event loop), and callback limits are checked when a callback returns.
    """

    def __init__(
        self,
        options: Any,
        *,
        kind: str,
        answers: Any,
        flush: Callable[[], None] = lambda: None,
        blocking: bool = False,
        uploader: Callable[..., Any] | None = None,
    ) -> None:
        self.options = options
        self.kind = kind
        self.answers = answers
        self._flush = flush
        self.blocking = blocking
        self.aborted = False
        self.failure: BaseException | None = None
        self.uploader = uploader if uploader is not None else options.on_artifact_upload_request
        self.log = options.logger or logger
        # Messages handed to this request so far (the upstream's `message_count`).
        self.handed = 0

    @property
    def cancelled_message(self) -> str:
        return "Query was cancelled" if self.kind == "query" else "Command execution was cancelled"

    def abort(self) -> None:
        """Cancels the request: callbacks stop, the call raises ``CancelledException``."""
        self.aborted = True
        self.answers.abort()
        self._flush()

    def _fail(self, error: BaseException) -> None:
        """A callback failed: the request is cancelled, its terminal read, then ``error`` raised."""
        if self.failure is None:
            self.failure = error
            self.answers.abort()
            self._flush()

    def _refuse(self, result: Any) -> None:
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError(
            "the blocking client calls callbacks as plain functions: this one returned an "
            "awaitable (use RuntimeUseClient for async callbacks)"
        )

    async def _call(self, callback: Callable[..., Any], arg: Any, limit: float | None, name: str) -> Any:
        if limit is None or self.blocking:
            started = time.monotonic() if limit is not None else 0.0
            result = callback(arg)
            if inspect.isawaitable(result):
                if self.blocking:
                    self._refuse(result)
                result = await result
            if limit is not None and time.monotonic() - started > limit:
                raise _limit_error(name, limit)
            return result
        try:
            async with asyncio.timeout(limit):
                result = callback(arg)
                if inspect.isawaitable(result):
                    result = await result
                return result
        except TimeoutError as exc:
            raise _limit_error(name, limit) from exc

    async def artifact(self, filename: str, filepath: str, key: int) -> None:
        """Answers one artifact upload request (``respond``/``decline`` of ``answers``)."""
        if self.aborted or self.failure is not None or self.uploader is None:
            self.answers.decline(key)
            self._flush()
            return
        request = construct(
            ArtifactUploadRequestMessageInterface,
            {"message_type": "artifact_upload_request_message", "filename": filename, "filepath": filepath},
        )
        try:
            answer = await self._call(
                self.uploader,
                request,
                self.options.artifact_upload_callback_timeout,
                "on_artifact_upload_request",
            )
        except Exception as exc:
            if isinstance(exc, CallbackTimeoutError) and exc.metadata is not None:
                exc.metadata.update(filename=filename, filepath=filepath)
            self.answers.decline(key)
            self._fail(exc)
            return
        self.answers.respond(key, answer.presigned_url, answer.content_type)
        self._flush()

    async def run(self, next_items: Callable[[], Awaitable[list[Any]]]) -> Any:
        """Runs the callbacks for each item until the terminal; returns the result or raises.

        Items are message models (command output, assistant messages: the frequent ones) or
        tuples ``(code, ...)``."""
        options = self.options
        on_output = options.on_command_output
        on_assistant = options.on_assistant_message
        assistant_limit = options.assistant_callback_timeout
        output_async = on_output is not None and inspect.iscoroutinefunction(on_output) and not self.blocking
        while True:
            batch = await next_items()
            if not batch:
                raise RuntimeConnectionError(
                    "No result message received: the connection closed before the request finished"
                )
            base = self.handed
            self.handed += len(batch)
            for item in batch:
                cls = type(item)
                if cls is _Output:
                    if on_output is None or self.aborted or self.failure is not None:
                        continue
                    try:
                        if output_async:
                            await on_output(item)
                        else:
                            result = on_output(item)
                            if result is not None and inspect.isawaitable(result):
                                if self.blocking:
                                    self._refuse(result)
                                await result
                    except Exception as exc:
                        self._fail(exc)
                elif cls is _Assistant:
                    if on_assistant is None or self.aborted or self.failure is not None:
                        continue
                    try:
                        await self._call(on_assistant, item, assistant_limit, "on_assistant_message")
                    except Exception as exc:
                        if isinstance(exc, CallbackTimeoutError) and exc.metadata is not None:
                            # Where it stood, found only now (the loop counts nothing per item).
                            at = next(i for i, x in enumerate(batch) if x is item)
                            exc.metadata.update(
                                last_message_type="assistant_message",
                                message_count=base + at + 1,
                                phase="assistant_callback",
                            )
                        self._fail(exc)
                else:
                    code = item[0]
                    if code == ARTIFACT:
                        await self.artifact(item[1], item[2], item[3])
                    elif code == DONE:
                        return self._finish(self._result(item[1]))
                    elif code == FAILED:
                        return self._finish(exception(item[1], self.cancelled_message))
                    else:
                        raise ProtocolError(f"unexpected item {code} during a request")

    def _result(self, data: Any) -> Any:
        # The Rust client decoded and checked these: constructed, not validated again. A
        # command batch's results are a list (what a followed request turns out to be).
        if isinstance(data, list):
            return construct(
                CommandExecutionResult,
                {
                    "results": [
                        construct(CommandResultItem, {"command": c, "exit_code": e, "stdout": s})
                        for c, e, s in data
                    ]
                },
            )
        kind, value, metadata = data
        if kind == "text":
            answer = construct(TextResult, {"type": "text", "text": value})
        else:
            answer = construct(StructuredOutputResult, {"type": "structured_output", "structured_output": value})
        result = construct(QueryResult, {"metadata": metadata, "data": answer, "output": None})
        output_type = getattr(self.options, "output_type", None)
        if output_type is not None and kind == "structured_output":
            result.output = output_type.model_validate(value)
        return result

    def _finish(self, outcome: Any) -> Any:
        if self.failure is not None:
            raise self.failure
        if self.aborted:
            raise CancelledException(self.cancelled_message)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _commands(items: list[Any] | None) -> list[Any] | None:
    if not items:
        return items
    return [c if isinstance(c, CommandInterface) else CommandInterface.model_validate(c) for c in items]


def _downloads(items: list[Any] | None) -> list[Any] | None:
    if not items:
        return items
    return [
        d if isinstance(d, RuntimeEnvironmentDownloadableInterface)
        else RuntimeEnvironmentDownloadableInterface.model_validate(d)
        for d in items
    ]


def wire_fields(options: Any, *, commands: list[Any] | None = None) -> dict[str, Any]:
    """The message fields of a call, for the native module (upstream names; commands and
    downloads given as dicts are validated into their models, as the upstream does)."""
    fields: dict[str, Any] = {
        "source_id": options.source_id,
        "secrets_to_redact": options.secrets_to_redact,
        "artifacts_dirs": options.artifacts_dirs or None,
        "artifacts_ignore_content": options.artifacts_ignore_content,
    }
    if commands is not None:
        fields["commands"] = _commands(commands)
        fields["pre_execution_downloadables"] = _downloads(options.pre_execution_downloadables)
        return fields
    schema = options.output_format_json_schema_str
    if options.output_type is not None:
        schema = json.dumps({"type": "json_schema", "schema": options.output_type.model_json_schema()})
    fields["system_prompt"] = options.system_prompt
    fields["model"] = options.model
    fields["output_format_json_schema_str"] = schema
    fields["agent_env"] = options.agent_env
    fields["pre_agent_invocation_commands"] = _commands(options.pre_agent_invocation_commands)
    fields["post_agent_invocation_commands"] = _commands(options.post_agent_invocation_commands)
    fields["pre_agent_downloadables"] = _downloads(options.pre_agent_downloadables)
    return fields


def start(target: Any, kind: str, prompt: str | None, commands: Any, options: Any, default_timeout: float | None) -> None:
    """Starts a call on a native connection or driver (both take the same arguments)."""
    timeout = options.timeout if options.timeout is not None else default_timeout
    uploader = options.on_artifact_upload_request is not None
    if kind != "query" and not commands:
        # The protocol has no empty batch (the Rust clients refuse it too): say so here.
        raise ValueError("execute_commands needs at least one command")
    fields = wire_fields(options) if kind == "query" else wire_fields(options, commands=commands)
    target.start(prompt if kind == "query" else None, fields, (timeout, options.idle_timeout, uploader))


def late_answerer(callback: Any) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]:
    """The end-of-session message handler (the upstream's ``on_message``) of an artifact
    callback, plain or async: a late artifact upload request's answer as an
    ``artifact_upload_response_message`` dict; ``None`` (decline) without a callback."""

    async def on_message(message: dict[str, Any]) -> dict[str, Any] | None:
        if callback is None or message.get("message_type") != "artifact_upload_request_message":
            return None
        request = ArtifactUploadRequestMessageInterface.model_validate(message)
        answer = callback(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return {
            "message_type": "artifact_upload_response_message",
            "filename": request.filename,
            "filepath": request.filepath,
            "presigned_url": answer.presigned_url,
            "content_type": answer.content_type,
        }

    return on_message


async def answer_late(
    answers: Any, item: tuple[Any, ...], on_message: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]] | None
) -> None:
    """Answers a late artifact request item ``(ARTIFACT, filename, filepath, key)`` through
    ``answers`` (``respond``/``decline``) with ``on_message``'s answer; a handler that fails
    declines it (logged). The caller sends the answer."""
    key = item[3]
    answer = None
    if on_message is not None:
        try:
            answer = await on_message(
                {"message_type": "artifact_upload_request_message", "filename": item[1], "filepath": item[2]}
            )
        except Exception:
            logger.exception("artifact upload callback failed while the session ended")
    if answer is None:
        answers.decline(key)
    else:
        answers.respond(key, answer["presigned_url"], answer["content_type"])
