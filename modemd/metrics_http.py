"""A trio-native Prometheus `/metrics` endpoint.

One task in the daemon's nursery, so no second thread touches the registry and it stops with the
nursery. HTTP/1.0-style: one request per connection, `Connection: close`. GET and HEAD on `/metrics`
(query string ignored) answer the scrape in the format the Accept header asks for (text 0.0.4 or
OpenMetrics, via `prometheus_client.exposition.choose_encoder`); other paths get 404, other methods
405. Requests are bounded in size and in time, and so is the number of concurrent clients.

Whether a non-loopback address may be used is decided by the configuration (`[metrics]
allow_non_loopback`), not here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("modemd.metrics")

MAX_REQUEST = 8192      # bytes of request line + headers
READ_TIMEOUT = 5.0      # seconds for the whole request to arrive
WRITE_TIMEOUT = 10.0    # seconds for the answer to be taken
MAX_CLIENTS = 16        # concurrent connections; more get 503
LINGER_TIMEOUT = 1.0    # after answering: seconds to drain the client's leftovers before closing
LINGER_BYTES = 65536    # ... and at most this much

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _response(status: int, body: bytes, content_type: str, *, head: bool = False,
              extra: str = "") -> bytes:
    header = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return header if head else header + body


def _plain(status: int, text: str = "", **kw: object) -> bytes:
    body = (text or _REASONS.get(status, "Error")).encode() + b"\n"
    return _response(status, body, "text/plain; charset=utf-8", **kw)  # type: ignore[arg-type]


async def _read_head(stream: trio.abc.ReceiveStream, limit: int) -> bytes:
    buf = bytearray()
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        if len(buf) > limit:
            raise _BadRequest(431)
        data = await stream.receive_some(4096)
        if not data:
            raise _BadRequest(400)
        buf += data
    end = buf.find(b"\r\n\r\n")
    head = bytes(buf[:end]) if end >= 0 else bytes(buf[: buf.find(b"\n\n")])
    if len(head) > limit:
        raise _BadRequest(431)
    return head


def _parse(head: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        lines = head.decode("latin-1").splitlines()
        method, target, version = lines[0].split()
    except (ValueError, IndexError):
        raise _BadRequest(400) from None
    if not version.startswith("HTTP/"):
        raise _BadRequest(400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def _linger(stream: trio.SocketStream) -> None:
    """Half-close, then drain what the client still sends (bounded), so that closing with unread
    data does not reset the connection and destroy the answer in flight (RFC 9112 9.6)."""
    await stream.send_eof()
    drained = 0
    with trio.move_on_after(LINGER_TIMEOUT):
        while drained < LINGER_BYTES:
            data = await stream.receive_some(65536)
            if not data:
                return
            drained += len(data)


def handle_request(metrics: Metrics, head: bytes) -> bytes:
    """The full HTTP answer to one request head (sans-IO; the server below only moves bytes)."""
    try:
        method, target, headers = _parse(head)
    except _BadRequest as exc:
        return _plain(exc.status)
    path = target.split("?", 1)[0]
    if path != "/metrics":
        return _plain(404, "Not Found: try /metrics", head=method == "HEAD")
    if method not in ("GET", "HEAD"):
        return _plain(405, extra="Allow: GET, HEAD\r\n")
    try:
        body, content_type = metrics.generate(headers.get("accept", ""))
    except Exception:
        log.exception("metrics scrape failed")
        return _plain(500)
    return _response(200, body, content_type, head=method == "HEAD")


async def serve_metrics(
    metrics: Metrics,
    host: str,
    port: int,
    *,
    max_clients: int = MAX_CLIENTS,
    read_timeout: float = READ_TIMEOUT,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `metrics` on http://host:port/metrics until cancelled.

    `task_status.started()` gets the list of `trio.SocketListener`s (port 0 picks a free port:
    `listeners[0].socket.getsockname()[1]`).
    """
    slots = trio.Semaphore(max_clients)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(1):
                await stream.send_all(_plain(503, "too many clients"))
            await trio.aclose_forcefully(stream)
            return
        try:
            answer: bytes | None = None
            with trio.move_on_after(read_timeout):
                try:
                    answer = handle_request(metrics, await _read_head(stream, MAX_REQUEST))
                except _BadRequest as exc:
                    answer = _plain(exc.status)
            if answer is None:
                answer = _plain(408)
            with trio.move_on_after(WRITE_TIMEOUT):
                await stream.send_all(answer)
                await _linger(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("metrics client went away: %r", exc)
        finally:
            slots.release()
            await trio.aclose_forcefully(stream)

    await trio.serve_tcp(handler, port, host=host, task_status=task_status)
