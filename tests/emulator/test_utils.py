"""DNS, ping, NTP, QICFG, QISDE, QIGETERROR, QIDNSCFG."""

import re

import trio

from .helpers import activate, modem, open_client, recv_exact, tcp_server


async def test_qidnsgip():
    async with modem(hosts={"svc.test": "127.0.0.5"}) as (emu, port):
        assert await port.cmd('AT+QIDNSGIP=1,"svc.test"') == ["ERROR"]  # context not active
        await activate(port)
        await port.ok('AT+QIDNSGIP=1,"svc.test"')
        assert await port.urc("+QIURC:") == '+QIURC: "dnsgip",0,1,600'
        assert await port.urc("+QIURC:") == '+QIURC: "dnsgip","127.0.0.5"'
        await port.ok('AT+QIDNSGIP=1,"LOCALHOST"')
        assert await port.urc("+QIURC:") == '+QIURC: "dnsgip",0,1,600'
        assert await port.urc("+QIURC:") == '+QIURC: "dnsgip","127.0.0.1"'
        await port.ok('AT+QIDNSGIP=1,"nowhere.example"')
        assert await port.urc("+QIURC:") == '+QIURC: "dnsgip",565'
        assert await port.ok("AT+QIDNSGIP=?") == ["+QIDNSGIP: (1-16),<hostname>"]


async def test_qping_loopback_and_unreachable(mock_clock):
    async with modem() as (emu, port):
        await activate(port)
        await port.ok('AT+QPING=1,"localhost"')
        for _ in range(4):
            assert await port.urc("+QPING:") == '+QPING: 0,"127.0.0.1",32,20,255'
        assert await port.urc("+QPING:") == "+QPING: 0,4,4,0,20,20,20"
        t0 = trio.current_time()
        await port.ok('AT+QPING=1,"192.0.2.1",3,2')
        assert await port.urc("+QPING:", timeout=30) == "+QPING: 569"
        assert await port.urc("+QPING:", timeout=30) == "+QPING: 569"
        assert await port.urc("+QPING:", timeout=30) == "+QPING: 0,2,0,2,0,0,0"
        assert 6 <= trio.current_time() - t0 < 7
        await port.ok('AT+QPING=1,"unknown.example"')
        assert await port.urc("+QPING:") == "+QPING: 565"
        assert await port.cmd('AT+QPING=1,"localhost",0') == ["ERROR"]


async def test_qntp():
    async with modem() as (emu, port):
        await activate(port)
        assert await port.cmd("AT+QNTP?") == ["ERROR"]
        await port.ok('AT+QNTP=1,"127.0.0.1",123')
        line = await port.urc("+QNTP:")
        assert re.fullmatch(r'\+QNTP: 0,"\d{4}/\d\d/\d\d,\d\d:\d\d:\d\d\+00"', line), line
        assert (await port.ok("AT+CCLK?"))[0].startswith('+CCLK: "')


async def test_qicfg():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        lines = await port.ok("AT+QICFG=?")
        assert '+QICFG: "transpktsize",(1-1460)' in lines
        assert '+QICFG: "tcp/retranscfg",(3-20),(5-1000)' in lines
        assert await port.ok('AT+QICFG="tcp/retranscfg"') == ['+QICFG: "tcp/retranscfg",8,600']
        await port.ok('AT+QICFG="tcp/retranscfg",5,200')
        assert await port.ok('AT+QICFG="tcp/retranscfg"') == ['+QICFG: "tcp/retranscfg",5,200']
        assert await port.cmd('AT+QICFG="tcp/retranscfg",2,200') == ["ERROR"]
        assert await port.cmd('AT+QICFG="nosuch",1') == ["ERROR"]
        assert await port.ok('AT+QICFG="viewmode"') == ['+QICFG: "viewmode",0']
        # viewmode 1 puts the data after a comma on the header line; hex receive format
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await port.ok('AT+QICFG="viewmode",1')
        await server.send_all(b"abc")
        await port.urc("+QIURC:")
        await port.write(b"AT+QIRD=0\r")
        assert await port.expect(b"OK\r\n") == b"AT+QIRD=0\r\r\n+QIRD: 3,abc\r\n\r\nOK\r\n"
        await port.ok('AT+QICFG="viewmode",0')
        await port.ok('AT+QICFG="dataformat",0,1')
        await server.send_all(b"\x01\xff")
        await port.urc("+QIURC:")
        await port.write(b"AT+QIRD=0\r")
        assert await port.expect(b"OK\r\n") == b"AT+QIRD=0\r\r\n+QIRD: 2\r\n01FF\r\n\r\nOK\r\n"


async def test_qisde_echoes_payload():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        assert await port.ok("AT+QISDE?") == ["+QISDE: 0"]
        await port.ok("AT+QISDE=1")
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await port.write(b"AT+QISEND=0,4\r")
        await port.expect(b"> ")
        await port.write(b"e\r\ncho"[:4])
        assert await port.expect(b"SEND OK\r\n") == b"e\r\nc\r\nSEND OK\r\n"
        assert await recv_exact(server, 4) == b"e\r\nc"


async def test_qidnscfg_and_qigeterror():
    async with modem() as (emu, port):
        assert await port.cmd('AT+QIDNSCFG=1,"1.1.1.1"') == ["ERROR"]
        await activate(port)
        await port.ok('AT+QIDNSCFG=1,"1.1.1.1","9.9.9.9"')
        assert await port.ok("AT+QIDNSCFG=1") == ['+QIDNSCFG: 1,"1.1.1.1","9.9.9.9"']
        assert await port.cmd("AT+QICLOSE=99") == ["ERROR"]
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 552, invalid parameters"]
        assert await port.ok("AT+QICLOSE=0") == []  # closing a free id is fine
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 0, operation successful"]
