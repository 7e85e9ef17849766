"""The upstream exceptions (``AgentRuntimeError``, ``CancelledException``) and the kinds of the
Rust client's errors under them: timeouts are ``TimeoutError``s and connection failures
``ConnectionError``s, while staying ``AgentRuntimeError``s where the upstream raises one."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "AgentRuntimeError",
    "CancelledException",
    "RuntimeUseError",
    "RequestTimeoutError",
    "IdleTimeoutError",
    "CallbackTimeoutError",
    "ConnectTimeoutError",
    "RuntimeConnectionError",
    "ProtocolError",
]


class CancelledException(Exception):
    """The request was cancelled (``abort()``)."""


class AgentRuntimeError(Exception):
    """The runtime failed the request: ``error`` is its text, ``metadata`` what it added."""

    def __init__(self, error: str, metadata: dict[str, Any] | None = None):
        super().__init__(error)
        self.error = error
        self.metadata = metadata

    def __str__(self) -> str:
        if not self.metadata:
            return self.error
        try:
            shown = json.dumps(self.metadata, sort_keys=True, default=str)
        except TypeError:
            shown = str(self.metadata)
        return f"{self.error}\nmetadata: {shown}"


class RuntimeUseError(AgentRuntimeError):
    """An error of the Rust client (not the runtime's own): the base of the kinds below.
    ``error`` holds the Rust error's text with its chain of causes."""


class RequestTimeoutError(RuntimeUseError, TimeoutError):
    """The request's overall ``timeout`` passed (the upstream raises a bare ``TimeoutError``)."""


class IdleTimeoutError(RuntimeUseError, TimeoutError):
    """Nothing arrived from the runtime for ``idle_timeout`` seconds (``metadata`` says
    ``timeout_type: idle_timeout``, as the upstream's)."""


class CallbackTimeoutError(RuntimeUseError, TimeoutError):
    """A callback overran its limit (``assistant_callback_timeout`` or
    ``artifact_upload_callback_timeout``); the request was cancelled."""


class ConnectTimeoutError(RuntimeUseError, TimeoutError):
    """Connecting took longer than ``connect_timeout``."""


class RuntimeConnectionError(RuntimeUseError, ConnectionError):
    """The connection failed or closed before the request ended (also: the runtime stopped
    answering keepalive pings, or refused to resume the session)."""


class ProtocolError(RuntimeUseError):
    """The runtime sent what the protocol does not allow, or the client was misused."""
