"""TCP LISTENER / TCP INCOMING, UDP clients and UDP SERVICE over real loopback sockets."""

import pytest
import trio

from .helpers import activate, modem, recv_exact


async def test_listener_incoming_and_data_both_ways():
    async with modem() as (emu, port):
        await activate(port)
        await port.ok('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,2020,0')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 1,0"
        assert await port.ok("AT+QISTATE=0,1") == [
            '+QISTATE: 1,"TCP LISTENER","10.7.157.1",0,2020,3,1,1,0,"uart1"'
        ]
        real = emu.module_listen_port(2020)
        assert real != 2020 or real  # some real loopback port
        with pytest.raises(LookupError):
            emu.module_listen_port(2021)
        client = await trio.open_tcp_stream("127.0.0.1", real)
        cport = client.socket.getsockname()[1]
        # lowest free id is 0
        assert await port.urc("+QIURC:") == f'+QIURC: "incoming",0,1,"127.0.0.1",{cport}'
        state = await port.ok("AT+QISTATE=1,0")
        assert state == [f'+QISTATE: 0,"TCP INCOMING","127.0.0.1",{cport},2020,2,1,1,0,"uart1"']
        await client.send_all(b"ping")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
        assert await port.read(0) == b"ping"
        assert await port.send(0, b"pong") == "SEND OK"
        assert await recv_exact(client, 4) == b"pong"
        # closing the listener leaves the incoming connection alone
        await port.ok("AT+QICLOSE=1")
        assert await port.send(0, b"still") == "SEND OK"
        assert await recv_exact(client, 5) == b"still"
        await client.aclose()
        assert await port.urc("+QIURC:") == '+QIURC: "closed",0'
        await port.ok("AT+QICLOSE=0")


async def test_incoming_full():
    async with modem() as (emu, port):
        await activate(port)
        await port.ok('AT+QIOPEN=1,11,"TCP LISTENER","127.0.0.1",0,3000,0')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 11,0"
        real = emu.module_listen_port(3000)
        clients = []
        try:
            for cid in range(11):  # ids 0..10 are free
                clients.append(await trio.open_tcp_stream("127.0.0.1", real))
                assert (await port.urc("+QIURC:")).startswith(f'+QIURC: "incoming",{cid},11,')
            extra = await trio.open_tcp_stream("127.0.0.1", real)
            clients.append(extra)
            assert await port.urc("+QIURC:") == '+QIURC: "incoming full"'
            with trio.fail_after(5):
                try:
                    assert await extra.receive_some(10) == b""  # refused: closed at once
                except trio.BrokenResourceError:
                    pass
            # free one id: the next client gets it
            await port.ok("AT+QICLOSE=4")
            clients.append(await trio.open_tcp_stream("127.0.0.1", real))
            assert (await port.urc("+QIURC:")).startswith('+QIURC: "incoming",4,11,')
        finally:
            for c in clients:
                c.socket.close()


async def test_listener_port_busy_and_needs_local_port():
    async with modem() as (emu, port):
        await activate(port)
        assert await port.cmd('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,0,0') == ["ERROR"]
        await port.ok('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,2020,0')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 1,0"
        await port.ok('AT+QIOPEN=1,2,"TCP LISTENER","127.0.0.1",0,2020,0')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 2,574"


async def test_udp_client():
    async with modem() as (emu, port):
        await activate(port)
        server = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with server:
            await server.bind(("127.0.0.1", 0))
            sport = server.getsockname()[1]
            await port.ok(f'AT+QIOPEN=1,2,"UDP","127.0.0.1",{sport},0,0')
            assert await port.urc("+QIOPEN:") == "+QIOPEN: 2,0"
            assert await port.send(2, b"datagram\r\nOK\r\n") == "SEND OK"
            with trio.fail_after(5):
                data, addr = await server.recvfrom(2048)
            assert data == b"datagram\r\nOK\r\n"
            await server.sendto(b"reply-1", addr)
            await server.sendto(b"reply-2", addr)
            assert await port.urc("+QIURC:") == '+QIURC: "recv",2'
            assert await port.read(2) == b"reply-1"  # datagram boundaries are kept
            assert await port.read(2) == b"reply-2"
            assert await port.read(2) == b""


async def test_udp_service():
    async with modem() as (emu, port):
        await activate(port)
        await port.ok('AT+QIOPEN=1,2,"UDP SERVICE","127.0.0.1",0,3030,0')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 2,0"
        assert await port.ok("AT+QISTATE=1,2") == [
            '+QISTATE: 2,"UDP SERVICE","10.7.157.1",0,3030,2,1,2,0,"uart1"'
        ]
        real = emu.module_listen_port(3030)
        peer = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with peer:
            await peer.bind(("127.0.0.1", 0))
            pport = peer.getsockname()[1]
            await peer.sendto(b"AAAA", ("127.0.0.1", real))
            await peer.sendto(b"BBBBBB", ("127.0.0.1", real))
            assert await port.urc("+QIURC:") == '+QIURC: "recv",2'
            await port.write(b"AT+QIRD=2\r")
            raw = await port.expect(b"OK\r\n")
            assert (
                raw == f'AT+QIRD=2\r\r\n+QIRD: 4,"127.0.0.1",{pport}\r\nAAAA\r\n\r\nOK\r\n'.encode()
            )
            await port.write(b"AT+QIRD=2\r")
            raw = await port.expect(b"OK\r\n")
            assert f'+QIRD: 6,"127.0.0.1",{pport}\r\nBBBBBB'.encode() in raw
            assert await port.ok("AT+QIRD=2") == ["+QIRD: 0"]
            # replies go to the given address; plain QISEND needs the address on a service
            assert await port.cmd("AT+QISEND=2,3") == ["ERROR"]
            await port.write(f'AT+QISEND=2,5,"127.0.0.1",{pport}\r'.encode())
            await port.expect(b"> ")
            await port.write(b"hello")
            assert await port.urc("SEND") == "SEND OK"
            with trio.fail_after(5):
                data, addr = await peer.recvfrom(100)
            assert (data, addr[1]) == (b"hello", real)
            # a non-loopback destination is accepted and silently dropped
            await port.write(b'AT+QISEND=2,4,"192.0.2.7",9\r')
            await port.expect(b"> ")
            await port.write(b"gone")
            assert await port.urc("SEND") == "SEND OK"


async def test_udp_service_direct_push():
    async with modem() as (emu, port):
        await activate(port)
        await port.ok('AT+QIOPEN=1,5,"UDP SERVICE","127.0.0.1",0,4040,1')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 5,0"
        real = emu.module_listen_port(4040)
        peer = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with peer:
            await peer.bind(("127.0.0.1", 0))
            pport = peer.getsockname()[1]
            await peer.sendto(b"x\r\ny", ("127.0.0.1", real))
            await port.expect(f'+QIURC: "recv",5,4,"127.0.0.1",{pport}\r\n'.encode())
            assert await port.read_exact(6) == b"x\r\ny\r\n"
