"""ModuleSocket against a scripted QuectelAt facade: the cases the emulator cannot produce on
demand (a total that covers part of a chunk, filler completing a lost prompt, every chain position
of an uncertain chunk, a garbled +QIRD header, totals that disagree at EOF). No pty: the facade is the
socket layer's only view of the module."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
import trio

from modemd.at.channel import CommandLost
from modemd.at.commands import ReadResult, ReadTotals, SendAck
from modemd.at.protocol import Command, Response
from modemd.profiles import get_profile
from modemd.sockets.errors import DOWNLOAD_CORRUPT, UPLOAD_UNCERTAIN, ConnectionLost
from modemd.sockets.scheduler import TurnScheduler
from modemd.sockets.socket import ModuleSocket, SocketEnv, SocketSettings
from modemd.sockets.stats import SocketStats


@dataclass
class _Req:
    chunk: bytes
    next_chunk: object = None  # a chain (submit_stream): the socket's source of the next chunk
    withdrawn: bool = False


@dataclass
class ScriptedAt:
    """A module that takes QISEND chunks; `script` says what happens to each written QISEND:
    ok, lost_final (taken, SEND OK lost), lost_cmd (never seen), junk (prompt lost, filler),
    error (ERROR, not taken), partial (half taken, then lost: a total no chunk boundary explains)."""

    profile: object
    script: deque[str]
    module: bytearray = field(default_factory=bytearray)
    written: list[bytes] = field(default_factory=list)
    queries: int = 0
    # download side: what the module holds, what it received, and what QIRD answers look like
    rx: bytearray = field(default_factory=bytearray)
    received: int = 0
    reads: deque[str] = field(default_factory=deque)  # ok | garbled_empty | garbled_consumed
    extra_received: int = 0  # totals that claim bytes nobody ever handed over

    def arrive(self, data: bytes) -> None:
        self.rx += data
        self.received += len(data)

    async def qird(self, connect_id: int, length: int | None = None) -> ReadResult:
        await trio.lowlevel.checkpoint()
        step = self.reads.popleft() if self.reads else "ok"
        n = min(length or 1500, len(self.rx))
        data = bytes(self.rx[:n])
        if step == "garbled_empty":  # `+QIRD: 0` garbled: nothing was taken
            return ReadResult(b"", header=False)
        del self.rx[:n]
        if step == "garbled_consumed":  # `+QIRD: <n>` garbled: the payload went with it
            return ReadResult(b"", header=False)
        return ReadResult(data)

    async def qird_totals(self, connect_id: int) -> ReadTotals:
        await trio.lowlevel.checkpoint()
        total = self.received + self.extra_received
        return ReadTotals(total, total - len(self.rx), len(self.rx))

    async def qiswtmd(self, connect_id: int, mode: int) -> None:
        await trio.lowlevel.checkpoint()

    def set_push(self, connect_id: int, on: bool) -> None:
        pass

    def submit_send(self, connect_id, data, remote=None):
        return _Req(data)

    def submit_stream(self, connect_id, first, next_chunk):
        return _Req(first, next_chunk)

    async def wait_send(self, req: _Req) -> Response:
        """Like the channel's chain: the next chunk is asked for only at a SEND OK."""
        await trio.lowlevel.checkpoint()
        assert not req.withdrawn
        while True:
            response = self._one(req.chunk)
            if response.final != "SEND OK" or req.next_chunk is None:
                return response
            chunk = req.next_chunk(False)
            if chunk is None:
                return response
            req.chunk = chunk

    def _one(self, chunk: bytes) -> Response:
        self.written.append(chunk)
        step = self.script.popleft() if self.script else "ok"
        command = Command(f"AT+QISEND=0,{len(chunk)}", data=chunk)
        if step == "ok":
            self.module += chunk
            return Response(command, "SEND OK")
        if step == "error":
            return Response(command, "ERROR")
        if step == "lost_final":
            self.module += chunk
            raise CommandLost(command, 1.5, data_written=True)
        if step == "lost_cmd":
            raise CommandLost(command, 1.5)
        if step == "junk":
            self.module += b"\0" * len(chunk)
            raise CommandLost(command, 1.5, data_written=True, junk=True)
        assert step == "partial"
        self.module += chunk[: len(chunk) // 2]
        raise CommandLost(command, 1.5, data_written=True)

    async def qisend_ack(self, connect_id: int) -> SendAck:
        self.queries += 1
        await trio.lowlevel.checkpoint()
        return SendAck(len(self.module), len(self.module), 0)


async def _closer(msock) -> None:
    pass


def scripted(family: str, *steps: str) -> tuple[ModuleSocket, ScriptedAt]:
    at = ScriptedAt(get_profile(family), deque(steps))
    env = SocketEnv(at, at.profile, TurnScheduler(2), SocketStats(), SocketSettings(),  # type: ignore[arg-type]
                    _closer)
    msock = ModuleSocket(env, 1, "TCP", "127.0.0.1", 9)
    msock.connect_id = 0
    msock.on_open_result(0)
    return msock, at


DATA = bytes(range(256)) * 40  # 10240 bytes: 8 QISENDs of up to 1460


@pytest.mark.parametrize("steps", [
    ("lost_final",), ("lost_cmd",), ("error",), ("ok", "lost_final"), ("ok", "ok", "lost_cmd"),
    ("lost_final", "lost_final", "lost_cmd", "error", "ok", "lost_final"),
])
async def test_every_uncertain_send_is_settled_exactly_once(steps):
    msock, at = scripted("bg96", *steps)
    await msock.send(DATA)
    assert bytes(at.module) == DATA  # never a byte twice, never one skipped
    assert msock.bytes_sent == len(DATA) and msock.failure is None
    uncertain = sum(step != "ok" for step in steps)
    assert at.queries == uncertain == msock.env.stats.sends_uncertain


async def test_a_total_inside_a_chunk_resets_the_connection():
    msock, at = scripted("bg96", "ok", "partial")
    with pytest.raises(ConnectionLost) as info:
        await msock.send(DATA)
    assert info.value.reason == UPLOAD_UNCERTAIN and "total_send_length" in info.value.detail
    assert msock.failure is info.value and msock.env.stats.lost[UPLOAD_UNCERTAIN] == 1


async def test_filler_after_a_lost_prompt_resets_without_asking():
    msock, at = scripted("bg96", "junk")
    with pytest.raises(ConnectionLost) as info:
        await msock.send(DATA)
    assert info.value.reason == UPLOAD_UNCERTAIN and "filler" in info.value.detail
    assert at.queries == 0


@pytest.mark.parametrize("step", ["lost_final", "lost_cmd", "error"])
async def test_a_family_without_the_query_resets(step):
    msock, at = scripted("bc25", "ok", step)
    with pytest.raises(ConnectionLost) as info:
        await msock.send(DATA)
    assert info.value.reason == UPLOAD_UNCERTAIN and at.queries == 0
    assert msock.state == "open"  # as modemctl shows a failed socket until it is closed
    assert msock.machine.failed


@pytest.mark.parametrize("step", ["garbled_empty", "garbled_consumed"])
async def test_a_qird_answer_without_its_header_is_checked_with_the_totals(step):
    """OK without the +QIRD line: AT+QIRD=id,0 tells whether a payload went with it."""
    msock, at = scripted("bg96")
    at.arrive(b"x" * 3000)
    at.reads.append(step)
    msock.on_recv()
    if step == "garbled_empty":
        assert await msock.receive() == b"x" * 1500
        assert msock.env.stats.reads_retried == 1
    else:
        with pytest.raises(ConnectionLost) as info:
            await msock.receive()
        assert info.value.reason == DOWNLOAD_CORRUPT
        assert "handed out 1500 bytes" in info.value.detail


@pytest.mark.parametrize("extra", [0, 100])
async def test_eof_is_clean_only_when_the_totals_match(extra):
    """The remote closed and the buffer reads empty: a clean EOF only if the module received no
    more than was delivered; otherwise the client gets a reset, never a short clean stream."""
    msock, at = scripted("bg96")
    at.arrive(b"y" * 2000)
    at.extra_received = extra
    msock.on_closed()
    got = bytearray()
    if not extra:
        while chunk := await msock.receive():
            got += chunk
        assert got == b"y" * 2000 and msock.machine.eof
        return
    with pytest.raises(ConnectionLost) as info:
        while chunk := await msock.receive():
            got += chunk
    assert info.value.reason == DOWNLOAD_CORRUPT and got == b"y" * 2000
    assert msock.state == "remote_closed" and msock.machine.failed


async def test_pushed_frames_of_one_read_reach_a_waiting_receiver_in_one_write():
    """While the receiver waits with nothing queued, the frames of one read are collected and
    handed over in one write at the reader's push_done; what the local side does not take is
    queued, in order, for the receiving task."""
    msock, _ = scripted("bg96")
    msock.pushing = True
    writes: list[bytes] = []
    room = [10**6]

    def deliver(data: bytes) -> int:
        taken = min(len(data), room[0])
        writes.append(bytes(data[:taken]))
        return taken

    msock.deliver_nowait = deliver
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def receiver() -> None:
            got.append(await msock.receive())

        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert msock.on_push(b"aaa") is True      # the first frame of the read: hand over later
        assert msock.on_push(b"bbb") is False     # collected with it
        assert writes == []
        msock.hand_over()
        assert writes == [b"aaabbb"] and msock.pushed_bytes == 0
        room[0] = 2                               # the local socket takes two bytes only
        assert msock.on_push(b"ccc") is True
        msock.hand_over()
        assert writes[-1] == b"cc" and msock.pushed_bytes == 1
        await trio.testing.wait_all_tasks_blocked()
        assert got == [b"c"]                      # the rest, through the receiving task
    assert msock.bytes_received == 9
