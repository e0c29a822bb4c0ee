"""Exactly-once upload and download integrity when a data command or its answer is lost on the
line (issue 13): the emulator loses it (Emulator.lose_command / lose_answer), the AT channel probes
and raises CommandLost, and the socket layer settles it with the module's totals, or resets that one
connection. Real pty, real loopback servers; MockClock for the expected-time waits and probes."""

from __future__ import annotations

import hashlib

import pytest
import trio

from modemd.config import ProxyConfig
from modemd.sockets.errors import DOWNLOAD_CORRUPT, UPLOAD_UNCERTAIN, ConnectionLost
from modemd.sockets.pool import FREE, QUARANTINED
from tests.conftest import count_sha_bytes
from tests.sockets_helpers import (
    echo_handler,
    free_port,
    modem,
    payload,
    proxy_config,
    read_until_end,
    recv_exactly,
    running_proxy,
    sha,
    tcp_server,
)
from tests.test_proxy import forward_toml

BUFFER = ProxyConfig(direct_push=False)
QISEND = r"AT\+QISEND={cid},[1-9]\d*"  # a data QISEND (not the AT+QISEND=id,0 query)


async def wait_for(predicate, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)



def no_faults_reported(rig) -> bool:
    """The module stayed alive: the channel never found it silent, nothing asked for a reboot."""
    faults = getattr(rig.link, "faults", None)
    if faults is not None:
        try:
            faults.receive_nowait()
            return False
        except trio.WouldBlock:
            pass
    return not rig.stack.channel.silent


class Sink:
    """A loopback server that records what each connection got (to prove nothing doubled)."""

    def __init__(self) -> None:
        self.got: list[bytearray] = []

    async def __call__(self, stream: trio.SocketStream, server) -> None:
        buf = bytearray()
        self.got.append(buf)
        async for data in stream:
            buf += data


async def buffered(rig, cid: int, size: int) -> None:
    """Until the module holds `size` unread bytes for `cid` (buffer mode)."""
    with trio.fail_after(30):
        while (await rig.at.qird_totals(cid)).unread < size:
            await trio.sleep(0.01)


# -- upload -------------------------------------------------------------------------------------
async def test_lost_qisend_prompt_resets_only_that_connection(mock_clock):
    """The `>` of one QISEND is lost: the module waits in data mode, takes the probe as data, and
    the channel completes the data phase with filler (CommandLost.junk). The remote got bytes that
    are not the client's: that one connection resets; another connection goes on; no reboot."""
    async with modem() as rig, tcp_server(echo_handler) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("p", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg) as proxy:
            a = await trio.open_tcp_stream("127.0.0.1", port)
            await a.send_all(b"a" * 100)
            assert await recv_exactly(a, 100) == b"a" * 100
            (a_id,) = rig.manager.dispatcher.sockets
            b = await trio.open_tcp_stream("127.0.0.1", port)
            await b.send_all(b"b" * 100)
            assert await recv_exactly(b, 100) == b"b" * 100

            rig.emu.lose_answer(QISEND.format(cid=a_id), part="prompt")
            await a.send_all(b"A" * 1000)
            _, how = await read_until_end(a)
            assert how == "reset"
            await a.aclose()
            assert proxy.flows["p"].resets[UPLOAD_UNCERTAIN] == 1
            assert [x.rsplit(",", 1)[0] for x in rig.emu.lost] == [f"prompt AT+QISEND={a_id}"]
            assert rig.manager.stats.commands_lost == 1

            data = payload(50_000)  # the other connection never noticed
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.send_all, data)
                assert await recv_exactly(b, len(data)) == data
            await b.aclose()
            assert no_faults_reported(rig)


async def upload_through_loss(rig, sink: Sink, server, data: bytes) -> None:
    msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
    await msock.send(data)
    assert msock.bytes_sent == len(data)
    await wait_for(lambda: sink.got and len(sink.got[-1]) >= len(data))
    got = bytes(sink.got[-1])
    assert len(got) == len(data) and sha(got) == sha(data)  # nothing doubled, nothing skipped
    count_sha_bytes(len(data))
    await msock.aclose()


async def test_lost_send_ok_is_settled_exactly_once(mock_clock):
    """SEND OK is lost (the module took the bytes): AT+QISEND=id,0 shows total_send_length
    covers the chunk, so it is counted, not resent; the chunk queued behind it in the pipeline is
    withdrawn and sent after it, in order. SHA-256 of what the remote got matches."""
    sink = Sink()
    data = payload(60_000)
    async with modem() as rig, tcp_server(sink) as server:
        rig.emu.lose_answer(QISEND.format(cid=r"\d+"), count=3, part="final")
        await upload_through_loss(rig, sink, server, data)
        stats = rig.manager.stats
        assert len([x for x in rig.emu.lost if x.startswith("final AT+QISEND=")]) == 3
        assert stats.sends_settled_taken == 3 and stats.sends_resent == 0
        assert no_faults_reported(rig)


async def test_lost_qisend_command_is_sent_again_exactly_once(mock_clock):
    """The QISEND line is lost (the module never saw it), once alone and once glued to the
    probe: total_send_length says the module does not have the chunk: it is sent again, once."""
    sink = Sink()
    data = payload(60_000)
    async with modem() as rig, tcp_server(sink) as server:
        rig.emu.lose_command(QISEND.format(cid=r"\d+"), count=1)
        await upload_through_loss(rig, sink, server, data)
        rig.emu.lose_command(QISEND.format(cid=r"\d+"), count=1, glue=True)
        await upload_through_loss(rig, sink, server, data)
        assert rig.manager.stats.sends_resent == 2
        assert rig.manager.stats.sends_settled_taken == 0
        assert no_faults_reported(rig)


async def test_error_to_qisend_is_settled_then_resent_exactly_once():
    """ERROR to a QISEND: the module's total says whether it took the chunk; it did not, so the
    chunk is sent again, exactly once."""
    sink = Sink()
    data = payload(60_000)
    async with modem() as rig, tcp_server(sink) as server:
        rig.emu.error_next("QISEND", 2)
        await upload_through_loss(rig, sink, server, data)
        stats = rig.manager.stats
        assert stats.send_retries_error == 2 and stats.sends_resent == 2
        assert stats.sends_settled_taken == 0


@pytest.mark.parametrize("fault", ["lost_final", "error"])
async def test_bc25_resets_on_an_uncertain_send(fault, mock_clock):
    """BC25 has no AT+QISEND=id,0: after an uncertain QISEND modemd cannot know what the module
    has, so that one connection resets (the client sees a reset), never a guess."""
    sink = Sink()
    async with modem("bc25") as rig, tcp_server(sink) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        other = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        await msock.send(b"first")
        if fault == "error":
            rig.emu.error_next("QISEND", 1)
        else:
            rig.emu.lose_answer(QISEND.format(cid=msock.connect_id), part="final")
        with pytest.raises(ConnectionLost) as info:
            await msock.send(b"second")
        assert info.value.reason == UPLOAD_UNCERTAIN
        assert msock.failure is info.value
        await msock.aclose()
        await other.send(b"still here")
        assert other.failure is None
        await other.aclose()
        assert no_faults_reported(rig)


# -- download -----------------------------------------------------------------------------------
def holder(data: bytes):
    """A server that sends `data` and keeps the connection open."""
    async def handler(stream: trio.SocketStream, server) -> None:
        await stream.send_all(data)
        await trio.sleep_forever()
    return handler


async def test_lost_qird_answer_resets_that_connection(mock_clock):
    """A +QIRD answer is lost on the line after the module handed the bytes out: AT+QIRD=id,0
    shows they left the module and never arrived, so that connection resets (never a stream with
    a hole); another connection reads on."""
    data = payload(6000)
    async with modem(proxy_cfg=BUFFER) as rig, tcp_server(holder(data)) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        other = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        await buffered(rig, msock.connect_id, len(data))
        rig.emu.lose_answer(rf"AT\+QIRD={msock.connect_id},\d+", part="all")
        with pytest.raises(ConnectionLost) as info:
            await msock.receive()
        assert info.value.reason == DOWNLOAD_CORRUPT
        assert rig.manager.stats.lost[DOWNLOAD_CORRUPT] == 1
        await msock.aclose()
        got = bytearray()
        while len(got) < len(data):
            got += await other.receive()
        assert got == data and other.failure is None
        await other.aclose()
        assert no_faults_reported(rig)


async def test_lost_qird_command_is_read_again_bytes_intact(mock_clock):
    """The QIRD line is lost (the module never saw it): AT+QIRD=id,0 shows nothing left the
    module, so it is read again; every byte arrives, in order."""
    data = payload(6000)
    async with modem(proxy_cfg=BUFFER) as rig, tcp_server(holder(data)) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        await buffered(rig, msock.connect_id, len(data))
        rig.emu.lose_command(rf"AT\+QIRD={msock.connect_id},\d+")
        got = bytearray()
        while len(got) < len(data):
            got += await msock.receive()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert rig.manager.stats.reads_retried == 1 and msock.failure is None
        await msock.aclose()
        assert no_faults_reported(rig)


async def test_lost_push_answers_go_on_in_push_mode(mock_clock):
    """The control case for the download side: direct push never asks, so a lost command
    elsewhere (a QISEND SEND OK) does not disturb pushed data."""
    data = payload(20_000)
    async with modem() as rig, tcp_server(echo_handler) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        rig.emu.lose_answer(QISEND.format(cid=msock.connect_id), part="final")
        await msock.send(data)
        got = bytearray()
        while len(got) < len(data):
            got += await msock.receive()
        assert got == data
        await msock.aclose()


# -- close --------------------------------------------------------------------------------------
async def test_lost_qiclose_answer_frees_the_id_once_the_module_closed_it(mock_clock):
    """QICLOSE's OK is lost: the channel's probe shows the module alive (CommandLost, no reboot),
    the QICLOSE is written again, and only its answer frees the connect_id. If every answer is
    lost, the ID stays quarantined (never reused while the module may still hold it)."""
    async with modem() as rig, tcp_server(echo_handler) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        cid = msock.connect_id
        rig.emu.lose_answer(rf"AT\+QICLOSE={cid}(,\d+)?", part="final")
        await msock.aclose()
        assert msock.state == "closed"
        assert rig.manager.pool.slot(cid).state == FREE
        stats = rig.manager.stats
        assert stats.commands_lost == 1 and stats.qiclose_failures == 0
        assert rig.emu.lost[-1].startswith(f"final AT+QICLOSE={cid}")

        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        cid = msock.connect_id
        rig.emu.lose_answer(rf"AT\+QICLOSE={cid}(,\d+)?", count=10, part="final")
        await msock.aclose()
        assert rig.manager.pool.slot(cid).state == QUARANTINED
        assert stats.commands_lost >= 2
        rig.emu.lose_answer(rf"AT\+QICLOSE={cid}(,\d+)?", count=0)
        assert no_faults_reported(rig)


# -- bulk ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["buffer", "push"])
async def test_bulk_echo_through_lost_data_commands_keeps_every_byte(mode):
    """A bulk echo both ways while QISEND lines, SEND OKs and (buffer mode) QIRD lines are lost
    on the line and 5 % of QISENDs answer SEND FAIL: every loss is settled with the module's
    totals, the echo's SHA-256 matches, no connection resets, the module is never found silent."""
    data = payload(200_000)
    cfg = ProxyConfig(direct_push=mode == "push")
    async with modem(proxy_cfg=cfg, baud=921600) as rig, tcp_server(echo_handler) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(
                forward_toml("bulk", f"tcp:127.0.0.1:{port}", server.port),
                direct_push=mode == "push")) as proxy:
            emu = rig.emu
            emu.noise_seed(13)
            emu.send_fail_rate(0.05)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            got = bytearray()

            async def receive() -> None:
                while len(got) < len(data):
                    chunk = await client.receive_some(65536)
                    assert chunk
                    got.extend(chunk)
                    if len(got) > 30_000 and not armed:
                        armed.append(True)
                        emu.lose_command(QISEND.format(cid=r"\d+"))
                        emu.lose_answer(QISEND.format(cid=r"\d+"), part="final")
                        if mode == "buffer":
                            emu.lose_command(r"AT\+QIRD=\d+,[1-9]\d*")

            armed: list[bool] = []
            with trio.fail_after(600):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receive)
                    await client.send_all(data)
            assert sha(bytes(got)) == sha(data)
            count_sha_bytes(2 * len(data))
            await client.aclose()
            stats = rig.manager.stats
            lost = [x for x in emu.lost if "QISEND" in x or "QIRD" in x]
            assert len(lost) == (3 if mode == "buffer" else 2), emu.lost
            assert stats.sends_uncertain == 2 and stats.commands_lost >= len(lost)
            assert stats.send_fail > 0
            assert sum(proxy.flows["bulk"].resets.values()) == 0
            assert no_faults_reported(rig)
