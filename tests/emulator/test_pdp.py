"""PDP contexts: blocking QIACT (virtual time), limits, QIDEACT and network deactivation."""

import trio

from .helpers import activate, modem, open_client, recv_exact, tcp_server


async def test_qiact_blocks_for_qiact_delay_in_virtual_time(mock_clock):
    async with modem(qiact_delay=90) as (emu, port):
        assert await port.ok("AT+QICSGP=1") == ['+QICSGP: 1,"","","",0']
        await port.ok('AT+QICSGP=1,1,"UNINET","user","pw",1')
        assert await port.ok("AT+QICSGP=1") == ['+QICSGP: 1,"UNINET","user","pw",1']
        await port.ok("AT+CEREG=1")
        t0 = trio.current_time()
        await port.write(b"AT+QIACT=1\r")
        await port.expect(b"AT+QIACT=1\r")
        await trio.sleep(30)
        # URCs still come out while QIACT blocks
        emu.set_registered(False)
        emu.set_registered(True)
        assert await port.line(timeout=200) == "+CEREG: 0"
        assert await port.line(timeout=200) == "+CEREG: 1"
        assert await port.line(timeout=200) == "OK"
        assert 90 <= trio.current_time() - t0 < 95
        assert await port.ok("AT+QIACT?") == ['+QIACT: 1,1,1,"10.7.157.1"']
        # activating an active context is an error
        assert await port.cmd("AT+QIACT=1", timeout=200) == ["ERROR"]


async def test_qiact_limits_and_failures(mock_clock):
    async with modem(qiact_delay=1) as (emu, port):
        for ctx in (1, 2, 3):
            await port.ok(f"AT+QIACT={ctx}", timeout=10)
        assert await port.cmd("AT+QIACT=4", timeout=10) == ["ERROR"]  # at most three
        assert await port.cmd("AT+QIACT=17") == ["ERROR"]
        assert len(await port.ok("AT+QIACT?")) == 3
        await port.ok("AT+QIDEACT=3", timeout=10)
        emu.qiact_fail(1)
        assert await port.cmd("AT+QIACT=3", timeout=10) == ["ERROR"]
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 561, open pdp context failed"]
        await port.ok("AT+QIACT=3", timeout=10)
        emu.set_registered(False)
        assert await port.ok("AT+QIACT?") == []  # losing the network drops the contexts
        assert await port.cmd("AT+QIACT=1", timeout=10) == ["ERROR"]


async def test_pdp_deactivation_by_the_network():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await port.ok("AT+QIACT=2")
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,0"
        server = await accepted.receive()
        await server.send_all(b"unread")
        assert await port.urc("+QIURC:") == '+QIURC: "recv",0'
        await port.ok(f'AT+QIOPEN=2,1,"TCP","127.0.0.1",{sport},0,0')
        assert await port.urc("+QIOPEN:") == "+QIOPEN: 1,0"
        other = await accepted.receive()
        emu.pdp_deactivate(1)
        assert await port.urc("+QIURC:") == '+QIURC: "pdpdeact",1'
        with trio.fail_after(5):
            assert await server.receive_some(10) == b""  # the real socket is closed
        assert await port.ok("AT+QIACT?") == ['+QIACT: 2,1,1,"10.7.157.2"']
        state = await port.ok("AT+QISTATE")
        assert state[0].split(",")[5] == "4" and state[1].split(",")[5] == "2"
        assert await port.cmd("AT+QISEND=0,1") == ["ERROR"]
        assert await port.read(0) == b"unread"
        assert await port.cmd(f'AT+QIOPEN=1,2,"TCP","127.0.0.1",{sport},0,0') == ["ERROR"]
        await port.ok("AT+QIDEACT=1")
        assert await port.ok("AT+QISTATE=0,1") == []
        await port.ok("AT+QIACT=1")
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,0"
        await accepted.receive()
        # the other context's socket is untouched
        assert await port.send(1, b"ok") == "SEND OK"
        assert await recv_exact(other, 2) == b"ok"


async def test_qideact_failure_injection():
    async with modem() as (emu, port):
        await port.ok("AT+QIACT=1")
        emu.qideact_fail(1)
        assert await port.cmd("AT+QIDEACT=1") == ["ERROR"]
        assert await port.ok("AT+QIGETERROR") == ["+QIGETERROR: 562, close pdp context failed"]
        assert len(await port.ok("AT+QIACT?")) == 1  # still active
        await port.ok("AT+QIDEACT=1")
        assert await port.ok("AT+QIACT?") == []
