"""The one URC consumer of the socket layer: routes socket URCs by connect_id to their owner.

Direct-push data does not wait in the URC subscription: the AT channel's reader hands it to
`route_push` at once (a full subscription drops URCs, which is harmless for a "recv" notice and
fatal for data), and calls `push_done` once it has dispatched a read's events: a socket whose
local receiver waits collects the frames of one read and hands them over in one write.

Handlers run synchronously in the dispatcher task and never send AT commands: they set flags and wake
the socket's tasks (a handler that awaited the channel would deadlock behind its own reader).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import trio

from ..at.urc import Closed, Incoming, IncomingFull, OpenResult, Recv, Urc
from .socket import ModuleSocket

log = logging.getLogger("modemd.sockets")

SUBSCRIBE_BUFFER = 4096  # URCs; a lost recv URC is caught by the reconcile poll, never fatal


class UrcDispatcher:
    def __init__(
        self,
        on_incoming: Callable[[Incoming], None],
        on_incoming_full: Callable[[IncomingFull], None],
    ) -> None:
        self.sockets: dict[int, ModuleSocket] = {}
        self._on_incoming = on_incoming
        self._on_incoming_full = on_incoming_full
        self.counts: Counter[str] = Counter()
        self.orphans = 0
        self._collecting: list[ModuleSocket] = []  # sockets holding this read's pushed frames

    def register(self, sock: ModuleSocket) -> None:
        self.sockets[sock.connect_id] = sock

    def unregister(self, sock: ModuleSocket) -> None:
        if self.sockets.get(sock.connect_id) is sock:
            del self.sockets[sock.connect_id]

    async def run(self, urcs: trio.MemoryReceiveChannel[Urc]) -> None:
        """Consume one subscription until it ends or the task is cancelled."""
        async with urcs:
            async for urc in urcs:
                self.route(urc)

    def route(self, urc: Urc) -> None:
        if isinstance(urc, Recv):
            if urc.data is not None:
                self.route_push(urc.connect_id, urc.data)
            else:
                self._to_socket(urc.connect_id, "recv", lambda s: s.on_recv())
        elif isinstance(urc, Closed):
            self._to_socket(urc.connect_id, "closed", lambda s: s.on_closed())
        elif isinstance(urc, OpenResult):
            self._to_socket(urc.connect_id, "open", lambda s: s.on_open_result(urc.result))
        elif isinstance(urc, Incoming):
            self.counts["incoming"] += 1
            self._on_incoming(urc)
        elif isinstance(urc, IncomingFull):
            self.counts["incoming_full"] += 1
            self._on_incoming_full(urc)

    def route_push(self, connect_id: int, data: bytes) -> None:
        """Direct-push data, handed over synchronously by the AT channel's reader (never queued
        behind other URCs, never dropped): the data path's fast lane."""
        self.counts["push"] += 1
        sock = self.sockets.get(connect_id)
        if sock is None:
            self.orphans += 1
            log.warning("%d pushed bytes for connect_id %d, which no socket owns: dropped",
                        len(data), connect_id)
            return
        if sock.on_push(data):
            self._collecting.append(sock)

    def push_done(self) -> None:
        """The reader dispatched one read's events: the collected frames go to the local side."""
        if not self._collecting:
            return
        collecting, self._collecting = self._collecting, []
        for sock in collecting:
            sock.hand_over()

    def push_corrupt(self, connect_id: int) -> None:
        """Line noise ran a pushed payload past its length: its bytes are dropped, so the stream
        has a hole and the connection is reset (never continued, never a clean EOF)."""
        self.counts["push_corrupt"] += 1
        sock = self.sockets.get(connect_id)
        if sock is not None:
            sock.on_push_corrupt()

    def _to_socket(
        self, connect_id: int, kind: str, handler: Callable[[ModuleSocket], None]
    ) -> None:
        self.counts[kind] += 1
        sock = self.sockets.get(connect_id)
        if sock is None:
            self.orphans += 1
            log.debug("%s URC for connect_id %d, which no socket owns", kind, connect_id)
            return
        handler(sock)
