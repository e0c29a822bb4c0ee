"""TCP client sockets: QIOPEN to real loopback servers, QISEND, QIRD, closing."""

import pytest
import trio

from modemd.emulator import ConfigError, Emulator, EmulatorConfig

from .helpers import activate, modem, open_client, recv_exact, tcp_server

BINARY = b'\r\nOK\r\n\x1a\x1b+QIURC: "recv",0\r\n' + bytes(range(256)) + b"\r\nERROR\r\n"


async def test_open_send_binary_and_ack_query():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,0"
        server = await accepted.receive()
        state = await port.ok("AT+QISTATE=1,0")
        assert len(state) == 1
        fields = state[0].removeprefix("+QISTATE: ").split(",")
        assert fields[:4] == ["0", '"TCP"', '"127.0.0.1"', str(sport)]
        assert fields[5:] == ["2", "1", "0", "0", '"uart1"']
        assert int(fields[4]) == server.socket.getpeername()[1]  # the real local port

        assert await port.send(0, BINARY) == "SEND OK"
        assert await recv_exact(server, len(BINARY)) == BINARY
        with trio.fail_after(5):
            while True:
                ack = await port.ok("AT+QISEND=0,0")
                if ack == [f"+QISEND: {len(BINARY)},{len(BINARY)},0"]:
                    break
                await trio.sleep(0.01)
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 0, operation successful"]


async def test_variable_length_send_ctrl_z_and_esc():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await port.write(b"AT+QISEND=0\r")
        await port.expect(b"\r\n> ")
        await port.write(b"test1\x1a")
        assert await port.line() == "SEND OK"
        await port.write(b"AT+QISEND=0\r")
        await port.expect(b"\r\n> ")
        await port.write(b"never\x1b")
        assert await port.line() == "OK"
        assert await port.cmd('AT+QISENDEX=0,"3132333435"') == ["SEND OK"]
        assert await recv_exact(server, 10) == b"test112345"
        assert (await port.ok("AT+QISEND=0,0"))[0].startswith("+QISEND: 10,")


async def test_send_errors():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        assert await port.cmd("AT+QISEND=3,5") == ["ERROR"]  # no such socket
        await open_client(port, 0, sport)
        assert await port.cmd("AT+QISEND=0,1461") == ["ERROR"]
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 552, invalid parameters"]
        assert await port.cmd('AT+QISEND=0,5,"127.0.0.1",9') == ["ERROR"]  # only UDP SERVICE


async def test_non_loopback_address_fails_without_traffic():
    async with modem() as (emu, port):
        await activate(port)
        t0 = trio.current_time()
        assert await open_client(port, 0, 80, host="192.0.2.1") == "+QIOPEN: 0,566"
        assert await open_client(port, 1, 80, host="8.8.8.8") == "+QIOPEN: 1,566"
        assert trio.current_time() - t0 < 2  # refused at once, nothing was sent anywhere
        assert await port.ok("AT+QISTATE") == []
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 0, operation successful"]


def test_hosts_map_rejects_non_loopback():
    with pytest.raises(ConfigError, match="loopback"):
        EmulatorConfig(hosts={"example.com": "93.184.216.34"})
    with pytest.raises(ConfigError, match="unknown module family"):
        EmulatorConfig(family="sim800")


async def test_dns_names_through_hosts_map():
    async with modem(hosts={"server.test": "127.0.0.1", "v6.test": "::1"}) as (emu, port):
        await activate(port, ctype=3)  # IPv4v6: names of either version connect
        async with tcp_server() as (sport, accepted):
            assert await open_client(port, 0, sport, host="server.test") == "+QIOPEN: 0,0"
            await accepted.receive()
        assert await open_client(port, 1, 80, host="example.com") == "+QIOPEN: 1,565"
        with pytest.raises(ValueError):
            emu.set_hosts({"evil.test": "10.0.0.1"})
        async with tcp_server("::1") as (sport, accepted):
            assert await open_client(port, 2, sport, host="v6.test") == "+QIOPEN: 2,0"
            await accepted.receive()


async def test_id_in_use_and_inactive_context():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        assert await port.cmd(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{sport},0,0') == ["ERROR"]
        await activate(port)
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,0"
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,563"
        assert await port.cmd('AT+QIOPEN=1,"TCP","127.0.0.1",80,0,1') == ["ERROR"]
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 552, invalid parameters"]
        assert await port.cmd(f'AT+QIOPEN=1,12,"TCP","127.0.0.1",{sport},0,0') == ["ERROR"]
        assert len(await port.ok("AT+QISTATE")) == 1


async def test_connection_refused():
    async with modem() as (emu, port):
        await activate(port)
        async with tcp_server() as (sport, _):
            pass  # the port is closed again: connecting to it is refused
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,566"


async def test_send_fail_when_tx_buffer_full_then_recovers():
    async with modem(tx_buffer=4096, sock_sndbuf=4096) as (emu, port):
        await activate(port)
        async with tcp_server(rcvbuf=4096) as (sport, accepted):
            await open_client(port, 0, sport)
            server = await accepted.receive()
            chunk = bytes(range(256)) * 5 + b"\x1a\x1b" * 50  # 1380 bytes
            sent = bytearray()
            for _ in range(2000):
                result = await port.send(0, chunk)
                if result == "SEND FAIL":
                    break
                assert result == "SEND OK"
                sent += chunk
            else:
                raise AssertionError("never SEND FAIL")
            total, acked, unacked = map(int, (await port.ok("AT+QISEND=0,0"))[0][9:].split(","))
            assert total == len(sent) and acked + unacked == total and unacked > 0
            # the peer reads everything: the backlog drains and sending works again
            assert await recv_exact(server, len(sent), timeout=10) == bytes(sent)
            with trio.fail_after(5):
                while (await port.ok("AT+QISEND=0,0"))[0] != f"+QISEND: {total},{total},0":
                    await trio.sleep(0.01)
            assert await port.send(0, b"after") == "SEND OK"
            assert await recv_exact(server, 5) == b"after"


async def test_injected_send_fail():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        emu.send_fail(2)
        assert await port.send(0, b"one") == "SEND FAIL"
        assert await port.send(0, b"two") == "SEND FAIL"
        assert await port.send(0, b"three") == "SEND OK"
        assert await recv_exact(server, 5) == b"three"


async def test_recv_urc_is_edge_triggered():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await server.send_all(b"hello")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
        await server.send_all(b"world")
        await trio.sleep(0.05)
        assert await port.drain(0.1) == b""  # no second URC while the buffer is not empty
        assert await port.read(0, 3) == b"hel"
        await server.send_all(b"!")
        assert await port.drain(0.1) == b""  # still not drained to 0
        assert await port.read(0, 1500) == b"loworld!"
        assert await port.read(0, 1500) == b""
        assert await port.ok("AT+QIRD=0,0") == ["+QIRD: 11,11,0"]
        await server.send_all(b"again")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
        assert await port.ok("AT+QIRD=0,0") == ["+QIRD: 16,11,5"]
        # the raw framing of a read
        await port.write(b"AT+QIRD=0\r")
        assert await port.expect(b"OK\r\n") == b"AT+QIRD=0\r\r\n+QIRD: 5\r\nagain\r\n\r\nOK\r\n"
        await port.write(b"AT+QIRD=0,10\r")
        assert await port.expect(b"OK\r\n") == b"AT+QIRD=0,10\r\r\n+QIRD: 0\r\n\r\nOK\r\n"


async def test_recvind_adds_length():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await port.ok('AT+QICFG="recvind",1')
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await server.send_all(b"12345")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0,5'


async def test_dropped_recv_urc_data_still_readable():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        emu.drop_recv_urc(1)
        await server.send_all(b"lost urc")
        await trio.sleep(0.05)
        assert await port.drain(0.1) == b""
        assert await port.read(0) == b"lost urc"
        await server.send_all(b"next")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'


async def test_rx_buffer_full_stops_reading_the_real_socket():
    cap = 8192
    async with (
        modem(rx_buffer=cap, sock_rcvbuf=4096) as (emu, port),
        tcp_server() as (sport, accepted),
    ):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        server.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 4096)
        payload = bytes(i % 251 for i in range(300_000))
        done = trio.Event()

        async def push():
            await server.send_all(payload)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(push)
            assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
            await trio.sleep(0.2)
            assert await port.ok("AT+QIRD=0,0") == [f"+QIRD: {cap},0,{cap}"]
            assert not done.is_set()  # back-pressure reached the remote sender
            got = bytearray()
            with trio.fail_after(20):
                while len(got) < len(payload):
                    got += await port.read(0, 1500)
            assert bytes(got) == payload
            with trio.fail_after(5):
                await done.wait()


async def test_peer_close_keeps_unread_data():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await server.send_all(b"bye")
        await server.aclose()
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
        assert await port.urc("+QIURC:") == '+QIURC: "closed",0'
        state = (await port.ok("AT+QISTATE=1,0"))[0].split(",")
        assert state[5] == "4"  # closing
        assert await port.cmd("AT+QISEND=0,3") == ["ERROR"]
        assert await port.read(0) == b"bye"
        assert await port.read(0) == b""
        await port.ok("AT+QICLOSE=0")
        assert await port.ok("AT+QISTATE") == []


async def test_qiclose_and_remote_close_reach_the_peer():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server0 = await accepted.receive()
        await open_client(port, 1, sport)
        server1 = await accepted.receive()
        assert await port.send(0, b"last words") == "SEND OK"
        await port.ok("AT+QICLOSE=0")
        assert await recv_exact(server0, 100) == b"last words"  # then EOF
        emu.remote_close(1)
        assert await port.urc("+QIURC:") == '+QIURC: "closed",1'
        with trio.fail_after(5):
            assert await server1.receive_some(10) == b""
        with pytest.raises(LookupError):
            emu.remote_close(7)


async def test_direct_push_mode():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport, mode=1)
        server = await accepted.receive()
        payload = bytes(i % 256 for i in range(4000))
        await server.send_all(payload)
        got = bytearray()
        with trio.fail_after(5):
            while len(got) < len(payload):
                await port.expect(b'+QIURC: "recv",0,')
                n = int(await port.expect(b"\r\n"))
                assert 0 < n <= 1500
                got += await port.read_exact(n)
                assert await port.read_exact(2) == b"\r\n"
        assert bytes(got) == payload
        # switch to buffer mode: URC + QIRD again
        await port.ok("AT+QISWTMD=0,0")
        await server.send_all(b"buffered")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
        assert await port.read(0) == b"buffered"


async def test_qideact_closes_sockets():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await port.ok("AT+QIDEACT=1")
        assert await port.ok("AT+QIACT?") == []
        assert await port.ok("AT+QISTATE") == []
        with trio.fail_after(5):
            assert await server.receive_some(10) == b""


async def test_emulator_exceptions_are_not_wrapped():
    with pytest.raises(KeyError):
        async with Emulator.open(EmulatorConfig(power_on=False)):
            raise KeyError("mine")


async def test_switch_to_push_flushes_the_buffer():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await server.send_all(b"waiting")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
        await port.ok("AT+QISWTMD=0,1")
        await port.expect(b'+QIURC: "recv",0,7\r\nwaiting\r\n')
        assert await port.ok("AT+QISTATE=1,0") != []
        assert (await port.ok("AT+QISTATE=1,0"))[0].split(",")[8] == "1"


async def _pushes_until_ok(port, got: bytearray) -> None:
    """Consume lines up to OK, keeping pushed payloads (letters only: one line each)."""
    while (text := await port.line()) != "OK":
        if text.startswith('+QIURC: "recv",0,'):
            data = (await port.line()).encode()
            assert len(data) == int(text.rsplit(",", 1)[1]), text
            got += data
        else:
            assert text.startswith(("AT+QISWTMD", '+QIURC: "recv",0')), text


@pytest.mark.parametrize("baud,size", [(0, 200_000), (115200, 30_000)])
async def test_switching_modes_under_a_stream_keeps_its_order(baud, size):
    """A push the module already took from the socket goes out before AT+QISWTMD=id,0's OK: no
    pushed byte follows the OK, so AT+QIRD after it never overtakes older pushed data. Switched
    back and forth while the remote streams, the bytes read stay in order."""
    async with modem(baud=baud) as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport, mode=1)
        server = await accepted.receive()
        payload = bytes(65 + i % 26 for i in range(size))
        got = bytearray()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, payload)
            with trio.fail_after(60):
                for _ in range(12):
                    await port.write(b"AT+QISWTMD=0,0\r")
                    await _pushes_until_ok(port, got)
                    after = await port.drain(0.02)
                    assert b'"recv",0,' not in after, after[:200]
                    for _ in range(3):
                        got += await port.read(0)
                    await port.write(b"AT+QISWTMD=0,1\r")
                    await _pushes_until_ok(port, got)
                while len(got) < len(payload):
                    await port.urc('+QIURC: "recv",0,')
                    got += (await port.line()).encode()
        assert bytes(got) == payload


async def test_socket_torn_down_as_its_connect_completes_ends_quietly(monkeypatch):
    """A QICLOSE (or PDP loss, power cut) landing in the tick the real connect completes: the
    socket's tasks must not start on a socket that is already closed (the writer used to
    assert on `real` being None and crash the emulator)."""
    from modemd.emulator.sockets import ModSocket

    real_open = ModSocket._open_real

    async def open_then_torn_down(self, ip):
        err = await real_open(self, ip)
        self.kill()  # what AT+QICLOSE does to an opening socket, before open_task resumes
        self.session.forget(self)
        return err

    monkeypatch.setattr(ModSocket, "_open_real", open_then_torn_down)
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await port.ok("ATE0")
        await activate(port)
        await port.ok(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{sport},0,0')
        server = await accepted.receive()
        with trio.fail_after(5):
            assert await server.receive_some(10) == b""  # the real socket was closed
        assert await port.ok("AT+QISTATE") == []  # no +QIOPEN before it: nothing to report
        assert emu.socket_info(0) is None
        monkeypatch.undo()
        await open_client(port, 0, sport)  # the module is fine
        assert await port.send(0, b"ok") == "SEND OK"
        assert await recv_exact(await accepted.receive(), 2) == b"ok"
