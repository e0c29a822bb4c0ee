"""What each module family does differently (manuals 000, 001, 002, 004 vs 003)."""

import re

import pytest
import trio

from modemd.emulator import FAMILIES

from .helpers import modem, open_client, recv_exact, tcp_server


@pytest.mark.parametrize(
    "family,model",
    [
        ("bg96", "BG96"),
        ("bg95", "BG95-S5"),
        ("generic", "UC15"),
        ("bc25", "Quectel_BC25"),
        ("rg500u", "RG500U"),
    ],
)
async def test_every_family_boots_and_identifies(family, model):
    async with modem(family=family) as (emu, port):
        assert (await port.ok("ATI"))[1] == model
        assert await port.ok("AT+CGMM") == [model]
        assert emu.family is FAMILIES[family]


async def test_bg95():
    async with modem(family="bg95") as (emu, port), tcp_server() as (sport, accepted):
        await port.ok("AT+QIACT=1")
        assert await port.cmd("AT+QIACT=1") == ["ERROR"]
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 574, pdp has been actived"]
        assert await port.ok('AT+QICFG="tcp/retranscfg"') == ['+QICFG: "tcp/retranscfg",12,600']
        assert await port.ok('AT+QICFG="tcp/keepalive"') == ['+QICFG: "tcp/keepalive",0,120,75,9']
        await port.ok('AT+QICFG="tcp/keepalive",1')
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,0"
        server = await accepted.receive()
        assert await port.cmd('AT+QISENDEX=0,"3132",1') == ["SEND OK"]
        assert await recv_exact(server, 2) == b"12"


async def test_generic():
    async with modem(family="generic") as (emu, port), tcp_server() as (sport, accepted):
        assert await port.cmd('AT+QICSGP=1,2,"v6"') == ["ERROR"]  # IPv4 only
        await port.ok('AT+QICSGP=1,1,"apn","",""')
        await port.ok("AT+QIACT=1")
        assert await port.cmd('AT+QIOPEN=1,"TCP","127.0.0.1",80,0,1') == ["ERROR"]
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 558, invalid parameters"]
        assert await port.ok("AT+QIOPEN?") == []
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,0"
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,562"
        server = await accepted.receive()
        await server.send_all(b"abc")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
        assert await port.cmd("AT+QIRD=0") == ["ERROR"]  # TCP: read_length is mandatory
        assert await port.read(0, 10) == b"abc"
        assert await port.cmd("AT+QISTATE?") == ["ERROR"]
        assert len(await port.ok("AT+QISTATE=1,0")) == 1
        assert await port.cmd("AT+QISDE?") == ["ERROR"]
        assert await port.cmd('AT+QISENDEX=0,"31"') == ["ERROR"]
        assert await port.cmd('AT+QICFG="recvind",1') == ["ERROR"]
        await port.ok('AT+QPING=1,"127.0.0.1",1,1')
        await port.urc("+QPING: 0,")
        assert (await port.urc("+QPING:")).startswith("+QPING: 2,1,1,0,")


async def test_bc25():
    async with modem(family="bc25", rx_buffer=16) as (emu, port), tcp_server() as (sport, accepted):
        assert await port.cmd("AT+QIACT=1") == ["ERROR"]  # no QIACT: AT+CGACT
        assert await port.cmd("AT+QISDE?") == ["ERROR"]
        assert await port.cmd("AT+QNTP=?") == ["ERROR"]
        await port.ok("AT+CGACT=1,1")
        assert await port.ok("AT+CGACT?") == ["+CGACT: 1,1"]
        assert await port.cmd(f'AT+QIOPEN=1,6,"TCP","127.0.0.1",{sport},0,0') == ["ERROR"]  # 0-5
        assert await port.cmd(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{sport},0,2') == ["ERROR"]
        await port.ok(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{sport},0,0,0')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 0,0"
        server = await accepted.receive()
        # two-stage send: OK, then SEND OK
        await port.write(b"AT+QISEND=0,4\r")
        await port.expect(b"> ")
        await port.write(b"\x00\r\n\x1a")
        assert await port.line() == "OK"
        assert await port.line() == "SEND OK"
        assert await port.ok('AT+QISEND=0,5,"hello"') == []
        assert await port.line() == "SEND OK"
        assert await recv_exact(server, 9) == b"\x00\r\n\x1ahello"
        assert await port.cmd("AT+QISEND=0,513") == ["ERROR"]
        assert await port.cmd("AT+QISEND=0,0") == ["ERROR"]  # no ACK query on BC25
        assert await port.ok('AT+QICFG="showlength",1') == ['+QICFG: "showlength",1']
        await server.send_all(b"0123456789abcdefXYZ")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0,16'
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0,"buff full"'
        assert await port.cmd("AT+QIRD=0") == ["ERROR"]  # read_length mandatory
        assert await port.cmd("AT+QIRD=0,513") == ["ERROR"]
        await port.write(b"AT+QIRD=0,10\r")
        assert (await port.expect(b"OK\r\n")).endswith(b"+QIRD: 10,6\r\n0123456789\r\n\r\nOK\r\n")
        state = await port.ok("AT+QISTATE?")
        assert len(state) == 1 and len(state[0].split(",")) == 8
        assert re.fullmatch(r'\+QISTATE: 0,"TCP","127\.0\.0\.1",\d+,\d+,2,1,0', state[0])
        await port.ok('AT+QIDNSCFG="1.1.1.1"')
        assert await port.ok("AT+QIDNSCFG?") == ['+QIDNSCFG: "1.1.1.1","0.0.0.0"']
        await port.ok('AT+QNTTP=1,"localhost"')
        assert (await port.urc("+QNTTP:")).startswith('+QNTTP: 0,"')
        emu.pdp_deactivate(1)  # no pdpdeact URC on BC25
        assert await port.ok("AT+QICLOSE=0") == []
        assert await port.line() == "CLOSE OK"
        assert await port.ok("AT+QISTATE?") == []


async def test_rg500u():
    async with modem(family="rg500u") as (emu, port), tcp_server() as (sport, accepted):
        assert await port.ok("AT+QISDE?") == ["+QISDE: 1"]  # echo on by default
        assert await port.cmd('AT+QIDNSGIP=1,"localhost"') == ["ERROR"]
        assert await port.cmd('AT+QNTP=1,"localhost"') == ["ERROR"]
        assert await port.cmd("AT+QIACT=6") == ["ERROR"]  # contexts 1-5
        await port.ok("AT+QIACTEX=1,1")
        assert await port.urc("+QIACTEX:") == '+QIACTEX: 1,0,1,"10.7.157.1"'
        assert await port.ok("AT+QIACT?") == ['+QIACT: 1,1,1,"10.7.157.1"']
        await port.ok("AT+CMEE=1")
        assert await port.cmd('AT+QIOPEN=1,"TCP"') == ["+CME ERROR: 552"]
        await port.ok(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{sport},0,0,11,0')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 0,0"
        server = await accepted.receive()
        await port.write(b"AT+QISEND=0,3\r")
        await port.expect(b"> ")
        await port.write(b"abc")
        assert await port.expect(b"SEND OK\r\n") == b"abc\r\nSEND OK\r\n"  # echoed data
        await port.ok("AT+QISDE=0")
        await port.ok('AT+QICFG="sendinfo",1')
        await port.write(b"AT+QISEND=0,2\r")
        await port.expect(b"> ")
        await port.write(b"de")
        assert await port.line() == "+QISEND: 0,0,10240"
        assert await port.line() == "OK"
        assert await recv_exact(server, 5) == b"abcde"
        await port.ok('AT+QICFG="close/mode",1')
        await port.ok("AT+QICLOSE=0")
        assert await port.urc("+QIURC:") == '+QIURC: "closed",0'
        # a failed open keeps its id until AT+QICLOSE
        await port.ok('AT+QIOPEN=1,1,"TCP","192.0.2.1",80')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 1,566"
        assert len(await port.ok("AT+QISTATE=1,1")) == 1
        await port.ok("AT+QICLOSE=1")
        assert await port.urc("+QIURC:") == '+QIURC: "closed",1'  # close/mode is still 1
        assert await port.ok("AT+QISTATE=1,1") == []
        await port.ok("AT+QIDEACTEX=1")
        assert await port.urc("+QIDEACTEX:") == "+QIDEACTEX: 1,0"
        assert await port.ok("AT+QIACT?") == []


async def test_rg500u_incoming_full_names_the_server():
    async with modem(family="rg500u") as (emu, port):
        await port.ok("AT+QIACT=1")
        for cid in range(11):
            await port.ok(f'AT+QIOPEN=1,{cid},"UDP SERVICE","127.0.0.1",0,{5000 + cid}')
            await port.urc("+QIOPEN:")
        await port.ok('AT+QIOPEN=1,11,"TCP LISTENER","127.0.0.1",0,6000')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 11,0"
        client = await trio.open_tcp_stream("127.0.0.1", emu.module_listen_port(6000))
        async with client:
            assert await port.urc("+QIURC:") == '+QIURC: "incoming full",11'


async def test_rg500u_tcp_client_maxnum():
    async with modem(family="rg500u") as (emu, port):
        await port.ok("AT+QIACT=1")
        await port.ok('AT+QIOPEN=1,11,"TCP LISTENER","127.0.0.1",0,6000,0,1')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 11,0"
        real = emu.module_listen_port(6000)
        first = await trio.open_tcp_stream("127.0.0.1", real)
        second = await trio.open_tcp_stream("127.0.0.1", real)
        async with first, second:
            assert (await port.urc("+QIURC:")).startswith('+QIURC: "incoming",0,11,')
            assert await port.urc("+QIURC:") == '+QIURC: "incoming full",11'
