"""The AT channel and every command helper against the emulator over a real pty."""

from __future__ import annotations

import hashlib
import os
from functools import partial

import pytest
import trio
import trio.testing

from modemd.at.channel import AtChannel, AtCommandError, AtTimeout, ChannelClosed
from modemd.at.commands import OpenFailed, QuectelAt
from modemd.at.pacer import ReadPacer
from modemd.at.protocol import Command
from modemd.at.urc import Closed, Incoming, PdpDeact, Recv
from modemd.profiles import BG96
from modemd.serial import SerialError, SerialPort

from .conftest import open_stack


async def activate(at: QuectelAt, context_id: int = 1) -> None:
    await at.qicsgp(context_id, "internet")
    await at.qiact(context_id)


async def echo_server(nursery, *, once=False):
    """A real loopback TCP echo server; returns its port."""

    async def handle(stream):
        async with stream:
            try:
                async for data in stream:
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    return listeners[0].socket.getsockname()[1]


async def next_urc(urcs, kind, timeout=10):
    with trio.fail_after(timeout):
        async for urc in urcs:
            if isinstance(urc, kind):
                return urc


async def test_basic_and_identify(stack):
    await stack.at.at()
    ident = await stack.at.identify()
    assert "BG96" in ident["model"]
    assert ident["imei"].isdigit()
    assert "BG96" in await stack.at.ati()
    assert await stack.at.sim_state() == "READY"
    rssi, ber = await stack.at.csq()
    assert 0 <= rssi <= 99
    assert await stack.at.registration("AT+CEREG?") in (1, 5)


async def test_pdp_activate_query_deactivate(stack):
    await activate(stack.at)
    contexts = await stack.at.qiact_query()
    assert contexts[0].context_id == 1 and contexts[0].active and contexts[0].addresses
    await stack.at.qideact(1)
    assert not [c for c in await stack.at.qiact_query() if c.active]


async def test_qiact_150s_under_mock_clock(mock_clock):
    async with open_stack("bg96", qiact_delay=149.0) as s:
        await s.at.qicsgp(1, "internet")
        t0 = trio.current_time()
        await s.at.qiact(1)
        took = trio.current_time() - t0
        assert 149.0 <= took < 150.0


async def test_qiact_deadline_passes_under_mock_clock(mock_clock):
    async with open_stack("bg96", qiact_delay=400.0) as s:
        await s.at.qicsgp(1, "internet")
        t0 = trio.current_time()
        with pytest.raises(AtTimeout) as info:
            await s.at.qiact(1)
        assert info.value.seconds == BG96.timeout("AT+QIACT") == 150.0
        assert 150.0 <= trio.current_time() - t0 < 151.0


async def test_command_timing_out_when_module_hangs(stack):
    stack.emulator.hang(True)
    with pytest.raises(AtTimeout):
        await stack.channel.command(Command("AT", timeout=0.3))
    stack.emulator.hang(False)
    await stack.at.at()  # the channel recovers: late lines are unknown, not glued


async def test_tcp_client_send_recv_binary_exact(stack):
    await activate(stack.at)
    async with trio.open_nursery() as nursery:
        port = await echo_server(nursery)
        urcs = stack.channel.subscribe()
        await stack.at.qiopen_and_wait(1, 0, "TCP", "127.0.0.1", port)
        payload = b"\r\nOK\r\n\x1a\x1b+QIURC: \"closed\",0\r\n" + os.urandom(1400)
        payload = payload[:1460]
        assert await stack.at.qisend(0, payload)
        await next_urc(urcs, Recv)
        got = b""
        while len(got) < len(payload):
            chunk = (await stack.at.qird(0, 1500)).data
            if not chunk:
                await next_urc(urcs, Recv)
                continue
            got += chunk
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        assert (await stack.at.qird(0, 1500)).data == b""
        totals = await stack.at.qird_totals(0)
        assert totals.total == totals.read == len(payload) and totals.unread == 0
        ack = await stack.at.qisend_ack(0)
        assert ack.total == len(payload)
        states = await stack.at.qistate()
        assert [(s.connect_id, s.service_type, s.state) for s in states] == [(0, "TCP", "connected")]
        await stack.at.qiclose(0)
        assert await stack.at.qistate() == []
        nursery.cancel_scope.cancel()


async def test_open_refused_non_loopback_and_unknown_name(stack):
    await activate(stack.at)
    with pytest.raises(OpenFailed) as info:
        await stack.at.qiopen_and_wait(1, 1, "TCP", "192.0.2.1", 80)
    assert info.value.code in (566, 565, 550)
    await stack.at.qiclose(1)
    with pytest.raises(OpenFailed) as info:
        await stack.at.qiopen_and_wait(1, 2, "TCP", "no-such-host.example", 80)
    assert BG96.error_name(info.value.code) == "dns_failed"
    code, _ = await stack.at.qigeterror()
    assert code >= 0


async def test_remote_close_and_pdpdeact_urcs(stack):
    await activate(stack.at)
    async with trio.open_nursery() as nursery:
        port = await echo_server(nursery)
        urcs = stack.channel.subscribe()
        await stack.at.qiopen_and_wait(1, 3, "TCP", "127.0.0.1", port)
        stack.emulator.remote_close(3)
        assert (await next_urc(urcs, Closed)).connect_id == 3
        await stack.at.qiclose(3)
        stack.emulator.pdp_deactivate(1)
        assert (await next_urc(urcs, PdpDeact)).context_id == 1
        nursery.cancel_scope.cancel()


async def test_interleaved_urcs_never_change_results(stack):
    await activate(stack.at)
    stack.emulator.interleave_urcs(True)
    for _ in range(20):
        contexts = await stack.at.qiact_query()
        assert contexts[0].active
        assert (await stack.at.csq())[0] >= 0
    stack.emulator.interleave_urcs(False)


async def test_listener_incoming_and_udp(stack):
    await activate(stack.at)
    urcs = stack.channel.subscribe()
    await stack.at.qiopen_and_wait(1, 11, "TCP LISTENER", "127.0.0.1", 0, local_port=2222)
    real_port = stack.emulator.module_listen_port(2222)
    client = await trio.open_tcp_stream("127.0.0.1", real_port)
    incoming = await next_urc(urcs, Incoming)
    assert incoming.server_id == 11 and incoming.connect_id != 11
    await client.send_all(b"ping")
    await next_urc(urcs, Recv)
    assert (await stack.at.qird(incoming.connect_id, 1500)).data == b"ping"
    assert await stack.at.qisend(incoming.connect_id, b"pong")
    assert await client.receive_some(10) == b"pong"
    await client.aclose()
    await stack.at.qiclose(incoming.connect_id)
    await stack.at.qiclose(11)

    udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await udp.bind(("127.0.0.1", 0))
    udp_port = udp.getsockname()[1]
    await stack.at.qiopen_and_wait(1, 5, "UDP", "127.0.0.1", udp_port)
    assert await stack.at.qisend(5, b"datagram-1")
    data, peer = await udp.recvfrom(100)
    assert data == b"datagram-1"
    await udp.sendto(b"reply", peer)
    await next_urc(urcs, Recv)
    assert (await stack.at.qird(5, 1500)).data == b"reply"
    await stack.at.qiclose(5)
    udp.close()


async def test_send_fail_is_a_result_not_an_error(stack):
    await activate(stack.at)
    async with trio.open_nursery() as nursery:
        port = await echo_server(nursery)
        await stack.at.qiopen_and_wait(1, 0, "TCP", "127.0.0.1", port)
        stack.emulator.send_fail(1)
        assert await stack.at.qisend(0, b"x") is False
        assert await stack.at.qisend(0, b"x") is True
        nursery.cancel_scope.cancel()


async def test_dns_ping_ntp_qicfg_qisde_qiswtmd(stack):
    await activate(stack.at)
    assert await stack.at.qidnsgip(1, "localhost") == ["127.0.0.1"]
    with pytest.raises(LookupError):
        await stack.at.qidnsgip(1, "nowhere.invalid")
    replies, summary = await stack.at.qping(1, "127.0.0.1", count=2)
    assert summary is not None and summary.received == 2 and len(replies) == 2
    ntp = await stack.at.qntp(1, "localhost")
    assert ntp.result == 0
    await stack.at.qicfg("transpktsize", 1024)
    assert await stack.at.qicfg("transpktsize") == ["1024"]
    await stack.at.qisde(False)
    async with trio.open_nursery() as nursery:
        port = await echo_server(nursery)
        await stack.at.qiopen_and_wait(1, 4, "TCP", "127.0.0.1", port)
        await stack.at.qiswtmd(4, 1)
        stack.channel.set_push(4, True)
        urcs = stack.channel.subscribe()
        assert await stack.at.qisend(4, b"pushed\r\nOK\r\n")
        urc = await next_urc(urcs, Recv)
        assert urc.data == b"pushed\r\nOK\r\n"
        nursery.cancel_scope.cancel()


async def test_error_result_raises_with_code(stack):
    with pytest.raises(AtCommandError):
        await stack.at.run("AT+NOSUCHCOMMAND")


async def test_injection_rejected_before_the_wire(stack):
    before = len(stack.emulator.commands)
    for evil in ['evil"\r\nAT+QPOWD=1\r\n', 'a"b', "x\x00y"]:
        with pytest.raises(ValueError):
            await stack.at.qiopen(1, 0, "TCP", evil, 80)
        with pytest.raises(ValueError):
            await stack.at.qicsgp(1, evil)
    assert len(stack.emulator.commands) == before
    assert not any("QPOWD" in c for c in stack.emulator.commands)


async def test_unexpected_rdy_reaches_subscribers(stack):
    from modemd.at.urc import ModuleReady

    urcs = stack.channel.subscribe()
    await stack.emulator.power_off()
    await stack.emulator.power_on()
    assert isinstance(await next_urc(urcs, ModuleReady), ModuleReady)


async def test_commands_after_channel_stopped_fail_cleanly():
    async with open_stack("bg96") as s:
        pass  # leaving the stack stops the channel's tasks
    with pytest.raises(ChannelClosed):
        await s.channel.command(Command("AT"))


def test_serial_errors_are_one_clear_line(tmp_path):
    with pytest.raises(SerialError) as info:
        SerialPort.open(str(tmp_path / "ttyNOPE"), lock_dir=str(tmp_path))
    assert "does not exist" in str(info.value) and "\n" not in str(info.value)


async def test_second_open_is_refused_with_lock(tmp_path):
    async with open_stack("bg96", boot=False) as s:
        with pytest.raises(SerialError) as info:
            first = SerialPort.open(s.emulator.tty_path, lock_dir=str(tmp_path))
            try:
                SerialPort.open(s.emulator.tty_path, lock_dir=str(tmp_path))
            finally:
                first.close()
        assert "in use" in str(info.value)


async def test_channel_over_a_plain_transport_roundtrip():
    """The channel only needs receive_some/send_all (the emulator is not required)."""
    a, b = trio.testing.memory_stream_pair()
    channel = AtChannel(a)
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run)

        async def module():
            data = await b.receive_some()
            assert data == b"AT+CSQ\r"
            await b.send_all(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")

        nursery.start_soon(module)
        resp = await channel.command(Command("AT+CSQ", prefix="+CSQ:"))
        assert resp.lines == ["+CSQ: 20,99"]
        nursery.cancel_scope.cancel()


async def test_module_reset_fails_the_command_in_flight_at_once():
    """A command written just before the module rebooted is never answered: fail it on RDY.
    (One probe goes before the next command: the booting module may have read it after all,
    tests/test_late_answers.py.)"""
    from modemd.at.channel import PROBE_TEXT, AtModuleReset

    a, b = trio.testing.memory_stream_pair()
    channel = AtChannel(a)
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run)

        async def module():
            assert await b.receive_some() == b"AT\r"
            await b.send_all(b"\r\nRDY\r\n")
            assert await b.receive_some() == PROBE_TEXT.encode() + b"\r"
            await b.send_all(b"\r\n+CMEE: 1\r\n\r\nOK\r\n")
            assert await b.receive_some() == b"ATE0\r"
            await b.send_all(b"\r\nOK\r\n")

        nursery.start_soon(module)
        t0 = trio.current_time()
        with pytest.raises(AtModuleReset):
            await channel.command(Command("AT", timeout=30))
        assert trio.current_time() - t0 < 5
        assert (await channel.command(Command("ATE0"))).final == "OK"
        nursery.cancel_scope.cancel()


class _RecordingTransport:
    """A memory stream that also takes writes without waiting, like SerialPort.write_nowait."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.written = bytearray()

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes) -> None:
        self.written += data

    def write_nowait(self, data: bytes) -> int:
        self.written += data
        return len(data)


async def test_submit_writes_at_once_on_an_idle_channel():
    """No task switch between submit() and the wire when nothing is in flight (latency of every
    small message); a second command waits for the first one's final result."""
    a, b = trio.testing.memory_stream_pair()
    transport = _RecordingTransport(a)
    channel = AtChannel(transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run)
        first = channel.submit(Command("AT"))
        assert transport.written == b"AT\r"          # before any checkpoint
        second = channel.submit(Command("ATE0"))
        assert transport.written == b"AT\r" and channel.queued == 1
        await b.send_all(b"\r\nOK\r\n")
        assert (await channel.wait(first)).final == "OK"
        assert transport.written == b"AT\rATE0\r"
        await b.send_all(b"\r\nOK\r\n")
        assert (await channel.wait(second)).final == "OK"
        nursery.cancel_scope.cancel()


async def test_a_command_written_during_a_paced_wait_is_answered_without_waiting(mock_clock):
    """While the module streams direct-push frames and nothing is in flight, the reader waits
    about two frames between reads (pacer.py). A command written then wakes it at once: its answer
    is read when it arrives, not when the wait would have ended (real pty, virtual time)."""
    master, slave = os.openpty()
    port = SerialPort.open(os.ttyname(slave), 921600, lock_dir=None)
    module = trio.lowlevel.FdStream(master)
    os.close(slave)
    channel = AtChannel(port)
    pushed: list[int] = []
    channel.push_sink = lambda connect_id, data: pushed.append(connect_id)
    channel.set_push(0, True)
    frame = b'\r\n+QIURC: "recv",0,1500\r\n' + bytes(1500) + b"\r\n"
    rate = 92_160  # bytes/s: a saturated 921600 line, handed over in 512-byte bursts like a tty

    async def stream(frame: bytes) -> None:
        for offset in range(0, len(frame), 512):
            burst = frame[offset : offset + 512]
            await module.send_all(burst)
            await trio.sleep(len(burst) / rate)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            for _ in range(8):  # the pacer measures the stream and starts waiting between frames
                await stream(frame)
            # the reader waits between reads (~33 ms: two frames' bytes); one such wait is
            # still running, the last frames still unread in the tty
            await trio.testing.wait_all_tasks_blocked(0.01)  # (real seconds, under the autojump)
            assert channel.pacer.lingers >= 4 and len(pushed) < 8
            cuts = channel.pause.cuts
            request = channel.submit(Command("AT+CSQ", prefix="+CSQ:"))
            assert channel.pause.cuts == cuts + 1  # the wait in progress was cut short
            assert await module.receive_some() == b"AT+CSQ\r"
            answered_at = trio.current_time()
            await module.send_all(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
            response = await channel.wait(request)
            assert response.lines == ["+CSQ: 20,99"]
            assert trio.current_time() - answered_at < 0.001  # not when the wait would end
            assert len(pushed) == 8  # the frames read before the answer
            nursery.cancel_scope.cancel()
    finally:
        port.close()
        await module.aclose()


async def test_under_the_real_clock_a_command_cuts_the_readers_timerfd_pause(monkeypatch):
    """The same under the real clock, where the pause is a timerfd (modemd/pause.py): the reader
    is made to pause 60 s after its next read; a command written then is answered at once (the
    test's deadline is far below 60 s, so only a working cut passes)."""
    master, slave = os.openpty()
    port = SerialPort.open(os.ttyname(slave), 921600, lock_dir=None)
    module = trio.lowlevel.FdStream(master)
    os.close(slave)
    channel = AtChannel(port)
    pausing = trio.Event()
    after_read = ReadPacer.after_read

    def long_pause(pacer: ReadPacer, *args, **kwargs) -> float:
        wait = after_read(pacer, *args, **kwargs)
        if not armed:
            return wait
        pausing.set()
        return 60.0

    # on the class: the reader makes its own pacer when it starts, which may be after run()
    # reported started
    monkeypatch.setattr(ReadPacer, "after_read", long_pause)
    armed = False
    try:
        with trio.fail_after(20):  # a reader that never pauses, or a cut that does not work
            async with trio.open_nursery() as nursery:
                await nursery.start(channel.run)
                armed = True
                await module.send_all(b'\r\n+QIURC: "pdpdeact",1\r\n')  # a read, then the pause
                await pausing.wait()
                await trio.testing.wait_all_tasks_blocked()  # the reader sleeps in its pause
                request = channel.submit(Command("AT+CSQ", prefix="+CSQ:"))
                assert await module.receive_some() == b"AT+CSQ\r"
                await module.send_all(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
                response = await channel.wait(request)
                assert response.lines == ["+CSQ: 20,99"]
                assert channel.pause.uses_timerfd and channel.pause.cuts == 1
                nursery.cancel_scope.cancel()
    finally:
        port.close()
        await module.aclose()


async def _answer(transport: _RecordingTransport, module, expect: bytes, reply: bytes) -> None:
    """The module's side of a scripted exchange: once the channel has written `expect` (and
    nothing else), it answers `reply`."""
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(transport.written) == expect
    transport.written.clear()
    await module.send_all(reply)


async def test_a_chain_writes_its_next_qisend_at_send_ok_and_gives_way_to_queued_commands():
    """submit_stream: the reader asks for the next chunk only at a SEND OK and writes it at once
    (the sender is not woken per chunk); a command queued meanwhile goes at the next SEND OK
    (the chain gives way); SEND FAIL ends the chain with that outcome, nothing written after."""
    a, b = trio.testing.memory_stream_pair()
    transport = _RecordingTransport(a)
    at = QuectelAt(AtChannel(transport), BG96)
    chunks = [b"bbbb", b"cccc", b"dddd"]
    asked: list[bool] = []

    def next_chunk(queued: bool) -> bytes | None:
        asked.append(queued)
        return None if queued or not chunks else chunks.pop(0)

    answer = partial(_answer, transport, b)

    async with trio.open_nursery() as nursery:
        await nursery.start(at.channel.run)
        request = at.submit_stream(0, b"aaaa", next_chunk)
        await answer(b"AT+QISEND=0,4\r", b"\r\n> ")
        await answer(b"aaaa", b"\r\nSEND OK\r\n")
        await trio.testing.wait_all_tasks_blocked()
        assert asked == [False]                        # asked once, at SEND OK
        await answer(b"AT+QISEND=0,4\r", b"\r\n> ")
        await answer(b"bbbb", b"\r\nSEND OK\r\n")
        await trio.testing.wait_all_tasks_blocked()  # the reader wrote the next QISEND
        other = at.channel.submit(Command("AT+CSQ", prefix="+CSQ:"))  # queued behind the chain
        await answer(b"AT+QISEND=0,4\r", b"\r\n> ")
        await answer(b"cccc", b"\r\nSEND OK\r\n")
        await trio.testing.wait_all_tasks_blocked()
        assert asked == [False, False, True]          # the chain gave way at that SEND OK
        assert (await at.wait_send(request)).final == "SEND OK"
        await answer(b"AT+CSQ\r", b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
        assert (await at.channel.wait(other)).lines == ["+CSQ: 20,99"]
        request = at.submit_stream(0, b"dddd", next_chunk)
        await answer(b"AT+QISEND=0,4\r", b"\r\n> ")
        await answer(b"dddd", b"\r\nSEND FAIL\r\n")
        assert (await at.wait_send(request)).final == "SEND FAIL"
        assert len(asked) == 3                        # never asked after SEND FAIL
        await trio.testing.wait_all_tasks_blocked()
        assert transport.written == b""
        nursery.cancel_scope.cancel()


async def test_a_chain_whose_next_command_fails_ends_and_the_reader_goes_on(caplog):
    """An exception in the chain's `follow` (its owner's bug) ends the chain with the response
    it has; the AT reader, the port's only reader, keeps running."""
    a, b = trio.testing.memory_stream_pair()
    transport = _RecordingTransport(a)
    at = QuectelAt(AtChannel(transport), BG96)

    def broken(queued: bool) -> bytes | None:
        raise RuntimeError("boom")

    async with trio.open_nursery() as nursery:
        await nursery.start(at.channel.run)
        request = at.submit_stream(0, b"aaaa", broken)
        await b.send_all(b"\r\n> ")
        await trio.testing.wait_all_tasks_blocked()
        await b.send_all(b"\r\nSEND OK\r\n")
        assert (await at.wait_send(request)).final == "SEND OK"
        assert "the chain ends here" in caplog.text
        transport.written.clear()
        csq = at.channel.submit(Command("AT+CSQ", prefix="+CSQ:"))
        assert transport.written == b"AT+CSQ\r"
        await b.send_all(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
        assert (await at.channel.wait(csq)).lines == ["+CSQ: 20,99"]
        nursery.cancel_scope.cancel()


async def test_a_chain_goes_on_behind_a_command_queued_meanwhile():
    """A command queued while a chain runs is written at the chain's next SEND OK; the chain's
    next QISEND follows it, as the same request (its waiter is not woken in between)."""
    a, b = trio.testing.memory_stream_pair()
    transport = _RecordingTransport(a)
    at = QuectelAt(AtChannel(transport), BG96)
    chunks = [b"bbbb"]
    asked: list[bool] = []

    def next_chunk(queued: bool) -> bytes | None:
        asked.append(queued)
        return chunks.pop(0) if chunks else None

    answer = partial(_answer, transport, b)

    async with trio.open_nursery() as nursery:
        await nursery.start(at.channel.run)
        request = at.submit_stream(0, b"aaaa", next_chunk)
        await answer(b"AT+QISEND=0,4\r", b"\r\n> ")
        other = at.channel.submit(Command("AT+CSQ", prefix="+CSQ:"))
        await answer(b"aaaa", b"\r\nSEND OK\r\n")
        await answer(b"AT+CSQ\r", b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")  # the queued one first
        assert asked == [True] and not request.done.is_set()
        assert (await at.channel.wait(other)).lines == ["+CSQ: 20,99"]
        await answer(b"AT+QISEND=0,4\r", b"\r\n> ")              # then the chain goes on
        await answer(b"bbbb", b"\r\nSEND OK\r\n")
        assert (await at.wait_send(request)).final == "SEND OK"
        assert asked == [True, False]
        nursery.cancel_scope.cancel()
