"""Transports: the protocols of user-supplied ones (``transport``) and ``WebSocketTransport``
(``websocket_transport``), the default, which ``RuntimeUseClient`` drives in Rust."""

from .transport import ConnectedTransport, EndSessionMessageHandler, PersistentTransport, Transport
from .websocket_transport import ConnectedWebSocketTransport, WebSocketTransport, settings

__all__ = [
    "ConnectedTransport",
    "ConnectedWebSocketTransport",
    "EndSessionMessageHandler",
    "PersistentTransport",
    "Transport",
    "WebSocketTransport",
]
