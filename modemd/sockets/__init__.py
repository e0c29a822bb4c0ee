"""The socket layer: connect_id pool, per-socket engine, URC dispatcher, SocketManager."""

from .errors import ConnectionLost, OpenError, RemoteClosed, SocketError
from .manager import SocketManager
from .socket import ModuleSocket, SocketSettings

__all__ = [
    "ConnectionLost", "ModuleSocket", "OpenError", "RemoteClosed", "SocketError", "SocketManager",
    "SocketSettings",
]
