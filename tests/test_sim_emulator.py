"""The emulator's SIM card on the wire: 27.007 +CPIN (PIN, PUK, NOT INSERTED), AT+QPINC where the
family has it, the boot URCs of a locked card, counters kept on the card across power cycles, and
the control socket's `sim` commands."""

from __future__ import annotations

from contextlib import asynccontextmanager

from modemd.emulator import Emulator, EmulatorConfig
from modemd.emulator.control import run_command

from .emulator.helpers import Port

PIN, PUK = "4711", "87654321"


async def ready_urcs(port: Port) -> list[str]:
    """The URCs a card prints once its PIN was accepted (as a card ready at boot would)."""
    raw = await port.expect(b"+QIND: PB DONE\r\n")
    return [x for x in raw.decode().split("\r\n") if x]


@asynccontextmanager
async def locked(family: str = "bg96", **kw):
    cfg = EmulatorConfig(family=family, power_on=False, boot_delay=0.01, sim_locked=True,
                         sim_pin=PIN, sim_puk=PUK, **kw)
    async with Emulator.open(cfg) as emu:
        port = Port(emu.tty_path)
        try:
            await emu.power_on()
            await port.expect(b"+CPIN: SIM PIN\r\n")
            await port.ok("AT+CMEE=1")
            yield emu, port
        finally:
            port.close()


async def test_pin_then_ready_with_urc_and_counters():
    async with locked() as (emu, port):
        assert await port.ok("AT+CPIN?") == ["+CPIN: SIM PIN"]
        assert await port.cmd("AT+CIMI") == ["+CME ERROR: 11"]        # SIM PIN required
        assert await port.ok("AT+QCCID") == [f"+QCCID: {emu.family.iccid}"]  # readable locked
        assert await port.ok('AT+QPINC="SC"') == ['+QPINC: "SC",3,10']
        assert await port.cmd(f'AT+CPIN="{PIN[::-1]}"') == ["+CME ERROR: 16"]
        assert await port.ok('AT+QPINC="SC"') == ['+QPINC: "SC",2,10']
        assert await port.cmd(f'AT+CPIN="{PIN}"') == ["OK"]
        assert await ready_urcs(port) == ["+CPIN: READY", "+QIND: SMS DONE", "+QIND: PB DONE"]
        assert await port.ok("AT+CPIN?") == ["+CPIN: READY"]
        assert await port.ok('AT+QPINC="SC"') == ['+QPINC: "SC",3,10']  # reset by the right PIN
        assert await port.cmd(f'AT+CPIN="{PIN}"') == ["+CME ERROR: 3"]  # nothing to enter
        assert (emu.sim.cpin_writes, emu.sim.cpin_wrong) == (3, 1)


async def test_three_wrong_pins_then_puk_kept_across_power_cycles():
    async with locked() as (emu, port):
        for _ in range(3):
            assert await port.cmd('AT+CPIN="0000"') == ["+CME ERROR: 16"]
        assert await port.ok("AT+CPIN?") == ["+CPIN: SIM PUK"]
        await emu.power_on()                                     # a power cycle
        await port.expect(b"+CPIN: SIM PUK\r\n")
        await port.ok("AT+CMEE=1")
        assert await port.ok('AT+QPINC?') == ['+QPINC: "SC",0,10', '+QPINC: "P2",3,10']
        assert await port.cmd(f'AT+CPIN="{PIN}"') == ["+CME ERROR: 12"]    # the PUK is needed
        assert await port.cmd('AT+CPIN="11111111","2468"') == ["+CME ERROR: 16"]
        assert await port.ok('AT+QPINC="SC"') == ['+QPINC: "SC",0,9']
        assert await port.cmd(f'AT+CPIN="{PUK}","2468"') == ["OK"]
        assert await ready_urcs(port) == ["+CPIN: READY", "+QIND: SMS DONE", "+QIND: PB DONE"]
        assert await port.ok("AT+CPIN?") == ["+CPIN: READY"]
        await emu.power_on()
        await port.expect(b"+CPIN: SIM PIN\r\n")                   # the new PIN, asked again
        assert await port.cmd('AT+CPIN="2468"') == ["OK"]


async def test_not_inserted_and_no_qpinc_on_bc25():
    cfg = EmulatorConfig(family="bc25", power_on=False, boot_delay=0.01, sim_ready=False)
    async with Emulator.open(cfg) as emu:
        port = Port(emu.tty_path)
        try:
            await emu.power_on()
            await port.expect(b"+CPIN: NOT INSERTED\r\n")
            await port.ok("AT+CMEE=1")
            assert await port.cmd("AT+CPIN?") == ["+CME ERROR: 10"]
            assert await port.cmd('AT+CPIN="1234"') == ["+CME ERROR: 10"]
            assert await port.cmd('AT+QPINC="SC"') == ["ERROR"]           # not a BC25 command
        finally:
            port.close()


async def test_control_socket_sim_commands():
    async with locked() as (emu, port):
        assert await run_command(emu, "sim status") == (
            "ok state=SIM_PIN inserted=True locked=True pin_left=3 puk_left=10 cpin_writes=0 "
            "cpin_wrong=0")
        assert await run_command(emu, "sim pin 13579") == "ok"
        assert await port.cmd('AT+CPIN="13579"') == ["OK"]
        assert await ready_urcs(port) == ["+CPIN: READY", "+QIND: SMS DONE", "+QIND: PB DONE"]
        assert await run_command(emu, "sim absent") == "ok"
        assert await port.urc("+CPIN:") == "+CPIN: NOT INSERTED"  # pulled while running
        assert await port.cmd("AT+CPIN?") == ["+CME ERROR: 10"]
        assert await run_command(emu, "sim ready") == "ok"
        assert await port.urc("+CPIN:") == "+CPIN: SIM PIN"  # the locked card asks again
        assert await run_command(emu, "sim busy") == "ok"
        assert await port.cmd("AT+CPIN?") == ["+CME ERROR: 14"]
        assert await run_command(emu, "sim notbusy") == "ok"
        assert await run_command(emu, "sim unlock") == "ok"
        assert await run_command(emu, "sim pin 12") == "error pin must be 4 to 8 digits, got '12'"
        assert (await run_command(emu, "sim dance")).startswith("error expected ready|absent")
