"""Loopback ports for tests: never the same port twice in one test process.

Asking the kernel for port 0 and closing the socket may return the same port to the next caller;
a config with two listeners on it is then refused (`metrics.listen ... is already used by
socks.listen`), which failed CI once. Every port handed out is remembered and skipped.
"""

from __future__ import annotations

import socket

_handed_out: set[tuple[int, int]] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 now and not handed out before by this process."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if (kind, port) not in _handed_out:
            _handed_out.add((kind, port))
            return port
    raise RuntimeError("no fresh loopback port after 1000 tries")
