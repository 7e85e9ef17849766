"""Messages, options and results: the same models as ``runtimeuse_client.types`` 0.15.1 (field
names, defaults, pydantic behaviour), so that code written for the upstream client keeps
working."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Union

from pydantic import BaseModel, Field

__all__ = [
    "AgentRuntimeMessageInterface",
    "RuntimeEnvironmentDownloadableInterface",
    "CommandInterface",
    "InvocationMessage",
    "CommandExecutionMessage",
    "QueryOptions",
    "ExecuteCommandsOptions",
    "QueryResult",
    "CommandResultItem",
    "CommandExecutionResult",
    "ResultMessageInterface",
    "CommandExecutionResultMessageInterface",
    "TextResult",
    "StructuredOutputResult",
    "AssistantMessageInterface",
    "CommandOutputMessageInterface",
    "HeartbeatMessageInterface",
    "ArtifactUploadRequestMessageInterface",
    "ArtifactUploadResponseMessageInterface",
    "ErrorMessageInterface",
    "CancelMessage",
    "EndSessionMessage",
    "EndSessionConfirmMessage",
    "ArtifactUploadResult",
    "OnAssistantMessageCallback",
    "OnCommandOutputCallback",
    "OnArtifactUploadRequestCallback",
]


class AgentRuntimeMessageInterface(BaseModel):
    """Any message the runtime sends; ``message_type`` says which."""

    message_type: Literal[
        "result_message",
        "assistant_message",
        "command_output_message",
        "artifact_upload_request_message",
        "error_message",
        "command_execution_result_message",
        "heartbeat_message",
    ]


class RuntimeEnvironmentDownloadableInterface(BaseModel):
    """A file the runtime downloads into ``working_dir`` before it starts."""

    download_url: str
    working_dir: str


class CommandInterface(BaseModel):
    """A shell command for the runtime: a batch's, or one run before or after the agent."""

    cwd: str | None = None
    command: str
    env: dict[str, str] | None = None


class InvocationMessage(BaseModel):
    """The ``invocation_message`` a query sends."""

    message_type: Literal["invocation_message"]
    source_id: str | None = None
    system_prompt: str
    user_prompt: str
    agent_env: dict[str, str] | None = None
    output_format_json_schema_str: str | None = None
    secrets_to_redact: list[str] = Field(default_factory=list)
    artifacts_dirs: list[str] | None = None
    artifacts_ignore_content: str | None = None
    pre_agent_invocation_commands: list[CommandInterface] | None = None
    post_agent_invocation_commands: list[CommandInterface] | None = None
    model: str
    pre_agent_downloadables: list[RuntimeEnvironmentDownloadableInterface] | None = None


class TextResult(BaseModel):
    """A query's answer as text (no output schema was given)."""

    type: Literal["text"] = "text"
    text: str


class StructuredOutputResult(BaseModel):
    """A query's answer as a JSON object following the output schema."""

    type: Literal["structured_output"] = "structured_output"
    structured_output: dict[str, Any]


class QueryResult(BaseModel):
    """What a query returns: the answer and the runtime's metadata.

    ``output`` holds the answer validated into the ``output_type`` model when the query asked
    for one (an extension of this package; ``None`` otherwise).
    """

    metadata: dict[str, Any] | None = None
    data: Union[TextResult, StructuredOutputResult] = Field(discriminator="type")
    output: Any = Field(default=None, exclude=True, repr=False)


class ResultMessageInterface(AgentRuntimeMessageInterface):
    """The ``result_message`` that ends a query."""

    message_type: Literal["result_message"]
    metadata: dict[str, Any] | None = None
    data: Union[TextResult, StructuredOutputResult] = Field(discriminator="type")


class AssistantMessageInterface(AgentRuntimeMessageInterface):
    """Text the agent streamed: what ``on_assistant_message`` receives."""

    message_type: Literal["assistant_message"]
    text_blocks: list[str]


class CommandOutputMessageInterface(AgentRuntimeMessageInterface):
    """One chunk of a command's stdout or stderr: what ``on_command_output`` receives.

    ``command`` is the command line that printed it.
    """

    message_type: Literal["command_output_message"]
    stream: Literal["stdout", "stderr"]
    text: str
    command: str


class HeartbeatMessageInterface(AgentRuntimeMessageInterface):
    """The runtime is alive, in ``phase``, ``elapsed_ms`` into the request."""

    message_type: Literal["heartbeat_message"]
    phase: str
    elapsed_ms: int


class ArtifactUploadRequestMessageInterface(AgentRuntimeMessageInterface):
    """The runtime asks where to upload a file: what ``on_artifact_upload_request`` receives."""

    message_type: Literal["artifact_upload_request_message"]
    filename: str
    filepath: str


class ArtifactUploadResponseMessageInterface(BaseModel):
    """The answer to an artifact upload request."""

    message_type: Literal["artifact_upload_response_message"]
    filename: str
    filepath: str
    presigned_url: str
    content_type: str


class ErrorMessageInterface(AgentRuntimeMessageInterface):
    """The runtime's ``error_message``."""

    message_type: Literal["error_message"]
    error: str
    metadata: dict[str, Any] | None = None


class CancelMessage(BaseModel):
    """Cancels the request in flight."""

    message_type: Literal["cancel_message"]


class EndSessionMessage(BaseModel):
    """Ends a persistent session."""

    message_type: Literal["end_session_message"]


class EndSessionConfirmMessage(BaseModel):
    """The runtime's confirmation of the end of a session."""

    message_type: Literal["end_session_confirm_message"]


class CommandExecutionMessage(BaseModel):
    """The ``command_execution_message`` a command batch sends."""

    message_type: Literal["command_execution_message"]
    source_id: str | None = None
    secrets_to_redact: list[str] = Field(default_factory=list)
    commands: list[CommandInterface]
    artifacts_dirs: list[str] | None = None
    artifacts_ignore_content: str | None = None
    pre_execution_downloadables: list[RuntimeEnvironmentDownloadableInterface] | None = None


class CommandResultItem(BaseModel):
    """One command's exit code and collected stdout."""

    command: str
    exit_code: int
    stdout: str | None = None


class CommandExecutionResult(BaseModel):
    """What a command batch returns."""

    results: list[CommandResultItem]


class CommandExecutionResultMessageInterface(AgentRuntimeMessageInterface):
    """The ``command_execution_result_message`` that ends a command batch."""

    message_type: Literal["command_execution_result_message"]
    results: list[CommandResultItem]


class ArtifactUploadResult(BaseModel):
    """What ``on_artifact_upload_request`` returns: where and as what to upload the file."""

    presigned_url: str
    content_type: str


#: Called with each assistant message. May be a plain or an async function (upstream: async only).
OnAssistantMessageCallback = Callable[[AssistantMessageInterface], Union[Awaitable[None], None]]
#: Called with each chunk of command output. Plain or async.
OnCommandOutputCallback = Callable[[CommandOutputMessageInterface], Union[Awaitable[None], None]]
#: Answers an artifact upload request. Plain or async.
OnArtifactUploadRequestCallback = Callable[
    [ArtifactUploadRequestMessageInterface],
    Union[Awaitable[ArtifactUploadResult], ArtifactUploadResult],
]


def _check_artifacts(dirs: list[str] | None, callback: object) -> None:
    if bool(dirs) != (callback is not None):
        raise ValueError(
            "artifacts_dirs and on_artifact_upload_request must be specified together"
        )


@dataclass
class QueryOptions:
    """Options of a query: what is sent, the callbacks, the time limits.

    The upstream fields, plus ``output_type`` (a pydantic model class: its JSON schema is sent
    as ``output_format_json_schema_str`` and the answer is validated into it, as
    ``QueryResult.output``). Time limits are in seconds; ``idle_timeout=None`` takes the
    client's (60 s unless the client says otherwise; ``math.inf`` turns it off).
    """

    #: The system prompt.
    system_prompt: str
    #: The model the runtime's agent uses.
    model: str
    #: A JSON Schema (text) for structured output.
    output_format_json_schema_str: str | None = None
    #: An identifier for tracing.
    source_id: str | None = None
    #: Environment variables for the agent.
    agent_env: dict[str, str] | None = None
    #: Strings the runtime redacts from everything it sends.
    secrets_to_redact: list[str] = field(default_factory=list)
    #: Directories the runtime watches for artifacts (with ``on_artifact_upload_request``).
    artifacts_dirs: list[str] | None = None
    #: Ignore rules (gitignore syntax) for every watched directory.
    artifacts_ignore_content: str | None = None
    #: Commands run before the agent.
    pre_agent_invocation_commands: list[CommandInterface] | None = None
    #: Commands run after the agent.
    post_agent_invocation_commands: list[CommandInterface] | None = None
    #: Files downloaded before the agent starts.
    pre_agent_downloadables: list[RuntimeEnvironmentDownloadableInterface] | None = None
    #: Called with each assistant message.
    on_assistant_message: OnAssistantMessageCallback | None = None
    #: Called with each chunk of command output.
    on_command_output: OnCommandOutputCallback | None = None
    #: Answers artifact upload requests.
    on_artifact_upload_request: OnArtifactUploadRequestCallback | None = None
    #: Overall limit of the query.
    timeout: float | None = None
    #: Longest silence of the runtime.
    idle_timeout: float | None = None
    #: Limit of each ``on_assistant_message`` call.
    assistant_callback_timeout: float | None = None
    #: Limit of each ``on_artifact_upload_request`` call.
    artifact_upload_callback_timeout: float | None = None
    #: The logger (default: this package's).
    logger: logging.Logger | None = None
    #: A pydantic model class for structured output (this package's extension).
    output_type: type[BaseModel] | None = None

    def __post_init__(self) -> None:
        _check_artifacts(self.artifacts_dirs, self.on_artifact_upload_request)
        if self.output_type is not None and self.output_format_json_schema_str is not None:
            raise ValueError("give output_type or output_format_json_schema_str, not both")


@dataclass
class ExecuteCommandsOptions:
    """Options of a command batch: the upstream fields."""

    #: Strings the runtime redacts from everything it sends.
    secrets_to_redact: list[str] = field(default_factory=list)
    #: An identifier for tracing.
    source_id: str | None = None
    #: Directories the runtime watches for artifacts (with ``on_artifact_upload_request``).
    artifacts_dirs: list[str] | None = None
    #: Ignore rules (gitignore syntax) for every watched directory.
    artifacts_ignore_content: str | None = None
    #: Files downloaded before the commands run.
    pre_execution_downloadables: list[RuntimeEnvironmentDownloadableInterface] | None = None
    #: Called with each assistant message.
    on_assistant_message: OnAssistantMessageCallback | None = None
    #: Called with each chunk of command output.
    on_command_output: OnCommandOutputCallback | None = None
    #: Answers artifact upload requests.
    on_artifact_upload_request: OnArtifactUploadRequestCallback | None = None
    #: Overall limit of the batch.
    timeout: float | None = None
    #: Longest silence of the runtime.
    idle_timeout: float | None = None
    #: Limit of each ``on_assistant_message`` call.
    assistant_callback_timeout: float | None = None
    #: Limit of each ``on_artifact_upload_request`` call.
    artifact_upload_callback_timeout: float | None = None
    #: The logger (default: this package's).
    logger: logging.Logger | None = None

    def __post_init__(self) -> None:
        _check_artifacts(self.artifacts_dirs, self.on_artifact_upload_request)
