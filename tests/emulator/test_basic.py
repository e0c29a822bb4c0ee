"""Boot, echo, identification and the plain 3GPP commands."""

import trio

from modemd.emulator import Emulator, EmulatorConfig

from .helpers import Port, modem


async def test_boot_urcs_in_order():
    async with Emulator.open(EmulatorConfig(power_on=False, boot_delay=0.01)) as emu:
        port = Port(emu.tty_path)
        try:
            assert await port.drain(0.05) == b""  # powered off: silent
            await emu.power_on()
            got = await port.expect(b"+QIND: PB DONE\r\n")
            assert got == (
                b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QIND: SMS DONE\r\n"
                b"\r\n+QIND: PB DONE\r\n"
            )
            assert await port.ok("AT") == []
        finally:
            port.close()


async def test_boot_delay_in_virtual_time(mock_clock):
    async with Emulator.open(EmulatorConfig(power_on=False, boot_delay=10)) as emu:
        port = Port(emu.tty_path)
        try:
            t0 = trio.current_time()
            await emu.power_on()
            await port.expect(b"RDY\r\n", timeout=60)
            assert 10 <= trio.current_time() - t0 < 11
        finally:
            port.close()


async def test_echo_on_and_off_raw_bytes():
    async with modem() as (emu, port):
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"AT\r\r\nOK\r\n"
        await port.write(b"ATE0\r")
        assert await port.expect(b"OK\r\n") == b"ATE0\r\r\nOK\r\n"  # the echo of ATE0 itself
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"\r\nOK\r\n"
        await port.write(b"ATE1\r")
        assert await port.expect(b"OK\r\n") == b"\r\nOK\r\n"
        await port.write(b"at\r\n")  # lower case and CR LF are accepted
        assert await port.expect(b"OK\r\n") == b"at\r\n\r\nOK\r\n"
        assert emu.commands == ["AT", "ATE0", "AT", "ATE1", "at"]


async def test_identification():
    async with modem() as (emu, port):
        assert await port.ok("ATI") == ["Quectel", "BG96", "Revision: BG96MAR02A07M1G"]
        await port.write(b"ATI\r")
        raw = await port.expect(b"OK\r\n")
        assert raw == b"ATI\r\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n"
        assert await port.ok("AT+CGMM") == ["BG96"]
        assert await port.ok("AT+CGMR") == ["BG96MAR02A07M1G"]
        assert await port.ok("AT+GSN") == [emu.family.imei]
        assert await port.ok("AT+CGSN") == [emu.family.imei]
        assert await port.ok("AT+CIMI") == [emu.family.imsi]
        assert (await port.ok("AT+QCCID"))[0].startswith("+QCCID: ")


async def test_unknown_and_malformed_commands():
    async with modem() as (emu, port):
        assert await port.cmd("AT+NOSUCH") == ["ERROR"]
        assert await port.cmd('AT+QIOPEN=1,"TCP') == ["ERROR"]  # unterminated string
        assert await port.cmd("ATX9") == ["ERROR"]
        # a line that is not a command gets no answer at all
        await port.write(b"hello\r")
        assert await port.drain(0.1) == b"hello\r"  # only the echo
        assert await port.ok("AT") == []


async def test_network_status_commands():
    async with modem() as (emu, port):
        assert await port.ok("AT+CPIN?") == ["+CPIN: READY"]
        assert await port.ok("AT+QINISTAT") == ["+QINISTAT: 7"]
        assert await port.ok("AT+CSQ") == ["+CSQ: 24,99"]
        assert (await port.ok("AT+QCSQ"))[0].startswith('+QCSQ: "CAT-M1"')
        assert await port.ok("AT+CREG?") == ["+CREG: 0,1"]
        assert await port.ok("AT+CGREG?") == ["+CGREG: 0,1"]
        await port.ok("AT+CEREG=2")
        assert (await port.ok("AT+CEREG?"))[0].startswith("+CEREG: 2,1,")
        assert (await port.ok("AT+COPS?"))[0].startswith("+COPS: 0,0,")
        assert await port.ok("AT+CFUN?") == ["+CFUN: 1"]
        await port.ok("AT+CMEE=2")
        assert await port.ok("AT+CMEE?") == ["+CMEE: 2"]


async def test_sim_not_ready_and_cme_levels():
    async with modem(sim_ready=False) as (emu, port):
        assert "+CPIN: NOT INSERTED" in port.seen
        assert "+QIND: PB DONE" not in port.seen
        assert await port.cmd("AT+CPIN?") == ["ERROR"]
        await port.ok("AT+CMEE=1")
        assert await port.cmd("AT+CPIN?") == ["+CME ERROR: 10"]
        await port.ok("AT+CMEE=2")
        assert await port.cmd("AT+CPIN?") == ["+CME ERROR: SIM not inserted"]
        assert await port.ok("AT+CEREG?") == ["+CEREG: 0,0"]
        emu.set_sim_ready(True)  # inserted while running: the card reports at once
        assert await port.urc("+CPIN:") == "+CPIN: READY"
        assert await port.ok("AT+CPIN?") == ["+CPIN: READY"]


async def test_registration_urcs():
    async with modem() as (emu, port):
        await port.ok("AT+CEREG=1")
        emu.set_registered(False)
        assert await port.urc("+CEREG:") == "+CEREG: 0"
        assert await port.ok("AT+CEREG?") == ["+CEREG: 1,0"]
        emu.set_registered(True)
        assert await port.urc("+CEREG:") == "+CEREG: 1"


async def test_cfun_and_reboot():
    async with modem() as (emu, port):
        await port.ok("AT+CFUN=0")
        assert await port.ok("AT+CFUN?") == ["+CFUN: 0"]
        assert await port.ok("AT+CEREG?") == ["+CEREG: 0,0"]
        await port.ok("AT+CFUN=1")
        await port.ok("AT+CFUN=1,1")
        await port.expect(b"RDY\r\n")
        await port.expect(b"PB DONE\r\n")
        assert await port.ok("AT") == []


async def test_concatenated_commands():
    async with modem() as (emu, port):
        assert await port.ok("AT+CMEE=1;+CREG?") == ["+CREG: 0,1"]
        assert await port.ok("ATE0V1+CMEE=2") == []
        assert await port.cmd("AT+CMEE?;+NOSUCH", echo=False) == ["+CMEE: 2", "ERROR"]
        assert await port.cmd("AT;", echo=False) == ["OK"]
