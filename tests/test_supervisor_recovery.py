"""Recovering a hung module: health check, reboot ladder, power cycle; the serial port vanishing."""

from __future__ import annotations

import sys

import pytest
import trio

from modemd.at.channel import AtError
from modemd.at.commands import OpenFailed, UrcTimeout
from modemd.emulator import Emulator, EmulatorConfig
from modemd.supervisor.power import CommandPowerBackend
from modemd.supervisor.states import State, Timings

from .supervisor_helpers import (
    EmuPower,
    Unpluggable,
    make_cfg,
    replace_modem,
    running,
    visited,
    wait_state,
)


class Transfer:
    """A stand-in for the socket layer: one TCP connection through the module, sending forever.

    Whenever the context or module goes away it waits for serving again and reopens.
    """

    def __init__(self, link, port: int, pause: float = 0.5) -> None:
        self.link, self.port, self.pause = link, port, pause
        self.sent = 0
        self.opens = 0
        self.errors: list[str] = []
        self.sending = trio.Event()

    async def run(self) -> None:
        chunk = b"x" * 1000
        while True:
            await self.link.wait_serving(1)
            at = self.link.at
            try:
                try:
                    await at.qiclose(0)
                except AtError:
                    pass
                await at.qiopen_and_wait(1, 0, "TCP", "127.0.0.1", self.port)
                self.opens += 1
                while True:
                    if await at.qisend(0, chunk):
                        self.sent += len(chunk)
                        self.sending.set()
                    await trio.sleep(self.pause)
            except (AtError, OpenFailed, UrcTimeout) as exc:
                self.errors.append(type(exc).__name__)
                await trio.sleep(1.0)


async def sink(received: list[int], task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def handler(stream):
        async with stream:
            async for data in stream:
                received[0] += len(data)

    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


async def test_hang_mid_transfer_is_power_cycled(mock_clock):
    received = [0]
    async with Emulator.open(EmulatorConfig(family="bg96", boot_delay=0.5, qiact_delay=1.0)) as emu:
        power = EmuPower(emu)                        # supply cut = emu.power_off() / power_on()
        async with running(make_cfg(emu.tty_path), power=power) as (sup, link), \
                trio.open_nursery() as nursery:
            port = await nursery.start(sink, received)
            transfer = Transfer(link, port)
            nursery.start_soon(transfer.run)
            with trio.fail_after(300):
                await transfer.sending.wait()
                while transfer.sent < 20_000:
                    await trio.sleep(0.5)
            hung_at = trio.current_time()
            emu.hang(True)                          # mid-transfer: a QISEND gets no answer
            with trio.fail_after(600):
                t_reboot = await wait_state(sup, State.REBOOTING)
                await link.wait_serving(1)
            recovered_at = trio.current_time()
            before = transfer.sent
            with trio.fail_after(300):
                while transfer.sent < before + 10_000:
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        detection = t_reboot - hung_at
        recovery = recovered_at - hung_at
        print(f"\nhang detected after {detection:.1f} s, PDP back after {recovery:.1f} s "
              f"(virtual time; ladder: {[(s.step, s.ok, round(s.seconds, 1)) for s in sup.last_ladder]})")
        # the QISEND in flight: its expected time (1.5 s), 3 probes, the filler (its `>` may
        # have been lost), the supervisor's 2 resync probes
        assert detection <= 1.5 + 0.2 + 3 * 1.0 + 1.0 + 2 * 1.0 + 0.5
        assert sup.schedule.last_reason.startswith("no_answer: AT+QISEND and 3 AT probes")
        assert [s.step for s in sup.last_ladder] == ["resync", "supply_cut", "wait_ready"]
        assert [s.ok for s in sup.last_ladder] == [False, True, True]
        assert [c for _, c in power.calls] == ["off", "on"]
        assert recovery <= 45.0
        assert transfer.opens == 2 and "AtTimeout" in transfer.errors
        assert received[0] >= 20_000


async def test_hang_is_power_cycled_through_the_command_backend(tmp_path):
    """Real time, real subprocesses: `python -m modemd.emulator.power --control SOCK off|on`."""
    control = str(tmp_path / "emu.sock")
    hook = [sys.executable, "-m", "modemd.emulator.power", "--control", control]
    cfg = make_cfg("", health_interval=0.5, health_timeout=0.3)
    power = CommandPowerBackend(off=hook + ["off"], on=hook + ["on"], supply_off_seconds=0.5,
                                timeout=20.0)
    timings = Timings(boot_timeout=10.0, probe_timeout=0.3, probe_interval=0.3)
    emu_cfg = EmulatorConfig(family="bg96", boot_delay=0.1, qiact_delay=0.1, control=control)
    received = [0]
    async with Emulator.open(emu_cfg) as emu:
        cfg = replace_modem(cfg, port=emu.tty_path)
        async with running(cfg, power=power, timings=timings) as (sup, link), \
                trio.open_nursery() as nursery:
            port = await nursery.start(sink, received)
            transfer = Transfer(link, port, pause=0.05)
            nursery.start_soon(transfer.run)
            with trio.fail_after(20):
                await transfer.sending.wait()
            hung_at = trio.current_time()
            emu.hang(True)                          # mid-transfer
            with trio.fail_after(30):
                await wait_state(sup, State.REBOOTING)
                await link.wait_serving(1)
            recovery = trio.current_time() - hung_at
            before = transfer.sent
            with trio.fail_after(20):
                while transfer.sent < before + 5_000:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    print(f"\ncommand backend: PDP back {recovery:.2f} s (real time) after the hang; "
          f"ladder: {[(s.step, s.ok, round(s.seconds, 2)) for s in sup.last_ladder]}")
    assert [s.step for s in sup.last_ladder] == ["resync", "supply_cut", "wait_ready"]
    assert sup.last_ladder[1].ok
    assert transfer.opens == 2
    assert recovery < 15.0


async def test_pwrkey_only_hung_module_takes_two_pulses(mock_clock):
    async with Emulator.open(EmulatorConfig(family="bg96", boot_delay=0.5, qiact_delay=1.0)) as emu:
        power = EmuPower(emu, supply=False, pwrkey=True)
        async with running(make_cfg(emu.tty_path), power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            emu.hang(True)
            with trio.fail_after(600):
                await wait_state(sup, State.REBOOTING)
                await link.wait_serving(1)
        # the first pulse switched the hung module off; the second one switched it on
        assert [(s.step, s.ok) for s in sup.last_ladder] == [
            ("resync", False), ("pwrkey", True), ("wait_ready", False), ("pwrkey", True),
            ("wait_ready", True),
        ]


async def test_none_backend_cannot_reset_a_hung_module_and_says_so(mock_clock, caplog):
    async with Emulator.open(EmulatorConfig(family="bg96", boot_delay=0.5, qiact_delay=1.0)) as emu:
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            emu.hang(True)
            with trio.fail_after(3600):
                await wait_state(sup, State.BACKOFF)   # 4 immediate attempts, then 10 min
            assert sup.schedule.count == 4
            assert sup.healthy()                       # a deliberate long wait
            emu.hang(False)
            with trio.fail_after(3600):
                await link.wait_serving(1)             # the 5th (software) reboot works
            assert "AT+CFUN=1,1" in emu.commands
    assert "power.backend = none" in caplog.text
    assert "offers no hardware reset" in caplog.text


async def test_port_disappears_and_is_reopened(mock_clock):
    async with Emulator.open(EmulatorConfig(family="bg96", boot_delay=0.5, qiact_delay=1.0)) as emu:
        opener = Unpluggable(emu.tty_path)
        async with running(make_cfg(emu.tty_path), open_port=opener) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            lost = link.lost(1)
            opener.unplug()
            await emu.power_off()
            with trio.fail_after(60):
                await wait_state(sup, State.PORT_MISSING)
                await lost.wait()
            assert link.at is None and not link.serving(1)
            assert sup.healthy()
            await trio.sleep(5.0)
            await emu.power_on()
            opener.plug()
            with trio.fail_after(60):
                await link.wait_serving(1)
            assert opener.opens == 2 and sup.port_losses == 1
            assert sup.schedule.total == 0
            assert visited(sup).count("port_missing") == 1


async def test_port_missing_too_long_is_power_cycled(mock_clock):
    async with Emulator.open(EmulatorConfig(family="bg96", boot_delay=0.5, qiact_delay=1.0)) as emu:
        opener = Unpluggable(emu.tty_path)

        class ReplugOnPower(EmuPower):
            async def supply_on(self):
                await super().supply_on()
                opener.plug()

        power = ReplugOnPower(emu)
        async with running(make_cfg(emu.tty_path), open_port=opener, power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            opener.unplug()                           # the USB device never comes back by itself
            t_missing = await wait_state(sup, State.PORT_MISSING)
            with trio.fail_after(600):
                t_reboot = await wait_state(sup, State.REBOOTING)
                await link.wait_serving(1)
            assert t_reboot - t_missing == pytest.approx(60.0, abs=1.0)
            assert sup.schedule.last_reason.startswith("port_missing")


async def test_usb_port_vanishing_during_the_power_cycle_is_reopened(mock_clock):
    async with Emulator.open(EmulatorConfig(family="bg96", boot_delay=0.5, qiact_delay=1.0)) as emu:
        opener = Unpluggable(emu.tty_path)

        class UsbPower(EmuPower):
            """The tty goes with the supply and re-enumerates 3 s after it returns."""

            async def supply_off(self):
                opener.unplug()
                await super().supply_off()

            async def supply_on(self):
                await super().supply_on()

                async def enumerate_later():
                    await trio.sleep(3.0)
                    opener.plug()

                nursery.start_soon(enumerate_later)

        async with trio.open_nursery() as nursery:
            power = UsbPower(emu)
            async with running(make_cfg(emu.tty_path), open_port=opener, power=power) as (sup, link):
                with trio.fail_after(300):
                    await link.wait_serving(1)
                sup.fire_reboot("qiclose_timeout: a flowchart reboot")
                with trio.fail_after(300):
                    await wait_state(sup, State.REBOOTING)
                    await wait_state(sup, State.PORT_MISSING)
                    await link.wait_serving(1)
                assert [(s.step, s.ok) for s in sup.last_ladder] == [
                    ("resync", True), ("qpowd", True), ("supply_cut", True), ("wait_ready", False),
                ]   # wait_ready went on after the tty was back, in the next session
                assert opener.opens == 2 and sup.port_losses == 1
                assert sup.schedule.total == 1
