"""A [[forward]] with a unix: or tcp: listener: each accepted connection gets its own module socket."""

from __future__ import annotations

import logging
from typing import Any

import trio

from ..config import ForwardConfig
from ..sockets.errors import SocketError
from .bridge import Bridge
from .endpoints import bind_stream, peer_name, reset_stream
from .stats import BufferGauge, FlowStats

log = logging.getLogger("modemd.proxy")

ACCEPT_BACKOFF = 0.1  # s after an accept() error such as EMFILE


class StreamForward:
    def __init__(
        self, cfg: ForwardConfig, manager: Any, flow: FlowStats, gauge: BufferGauge, linger: float
    ) -> None:
        self.cfg = cfg
        self.manager = manager
        self.flow = flow
        self.gauge = gauge
        self.linger = linger

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        listener, unix_file = await bind_stream(
            cfg.listen, what=f"forward {cfg.name!r}", mode=cfg.mode, gid=cfg.gid,
            allow_non_loopback=cfg.allow_non_loopback,
        )
        log.info("forward %s: listening on %s -> %s", cfg.name, cfg.listen, cfg.remote,
                 extra={"FORWARD": cfg.name})
        try:
            async with listener, trio.open_nursery() as nursery:
                task_status.started()
                await accept_loop(listener, nursery, self.serve, cfg.name)
        finally:
            if unix_file is not None:
                unix_file.remove()

    async def serve(self, stream: trio.SocketStream) -> None:
        """Open the module socket first; a refused open resets the client at once."""
        cfg, flow = self.cfg, self.flow
        peer = peer_name(stream)
        try:
            msock = await self.manager.open_client(
                cfg.context_id, "TCP", cfg.remote_host, cfg.remote_port, label=cfg.name,
                local_peer=peer,
            )
        except SocketError as exc:
            flow.refused[exc.reason] += 1
            log.warning("forward %s: %s -> %s refused: %s", cfg.name, peer, cfg.remote, exc.detail,
                        extra={"FORWARD": cfg.name})
            reset_stream(stream)
            return
        except BaseException:
            reset_stream(stream)
            raise
        await run_bridge(stream, msock, flow, self.gauge, self.linger)


async def run_bridge(
    stream: trio.SocketStream, msock: Any, flow: FlowStats, gauge: BufferGauge, linger: float
) -> str:
    flow.opened += 1
    flow.active += 1
    try:
        return await Bridge(stream, msock, flow, gauge, linger).run()
    finally:
        flow.active -= 1
        flow.closed += 1


async def accept_loop(listener: trio.SocketListener, nursery: trio.Nursery, handler: Any,
                      name: str) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            log.warning("%s: accept failed: %s", name, exc)
            await trio.sleep(ACCEPT_BACKOFF)
            continue
        nursery.start_soon(guarded, name, handler, stream)


async def guarded(name: str, handler: Any, *args: Any) -> None:
    """One connection's unexpected error is logged; it never takes its listener down."""
    try:
        await handler(*args)
    except Exception:
        log.exception("%s: a connection ended with an unexpected error", name)
