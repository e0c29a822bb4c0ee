"""Proportionate recovery: a lost command costs seconds, never a reboot; the ladder starts at the
bottom and a successful step ends it; only a silent module is power-cycled (emulator on a real pty,
MockClock)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import trio

from modemd.config import ModemConfig
from modemd.supervisor.states import State

from .supervisor_helpers import EmuPower, make_cfg, running, wait_state
from .test_supervisor import emulator


@asynccontextmanager
async def serving_rig(health_interval: float = 10.0):
    """An emulator, its power backend and a supervisor serving on it: (emu, power, sup, link)."""
    async with emulator() as emu:
        power = EmuPower(emu)
        cfg = make_cfg(emu.tty_path, health_interval=health_interval)
        async with running(cfg, power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            yield emu, power, sup, link


async def wait_for(predicate, timeout: float = 600.0, step: float = 0.5) -> None:
    """Poll a counter in virtual time (the supervisor has no event for each of them)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)


async def test_lost_health_at_is_no_reboot(mock_clock):
    async with serving_rig() as (emu, power, sup, link):
        lost = link.lost(1)
        checks = sup.health_checks
        emu.lose_command("AT")                 # the next health AT never reaches the module
        await wait_for(lambda: sup.health_checks > checks)
        assert emu.lost == ["command AT"]
        assert sup.health_failures == 0 and sup.channel.commands_lost == 1
        assert sup.state is State.SERVING and not lost.is_set()
        assert sup.schedule.total == 0 and not sup.ladder_steps and power.calls == []


async def test_lost_registration_query_during_bring_up_climbs_no_ladder(mock_clock):
    async with emulator() as emu:
        emu.lose_command(r"AT\+CREG\?")
        emu.lose_command(r"AT\+CGREG\?", glue=True)
        power = EmuPower(emu)
        async with running(make_cfg(emu.tty_path), power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            assert emu.lost == ["command AT+CREG?", "command AT+CGREG?"]
            assert sup.schedule.total == 0 and not sup.ladder_steps and power.calls == []
            assert sup.module_resets == 0 and sup.troubles == {}


async def test_resync_success_ends_the_ladder(mock_clock):
    async with serving_rig() as (emu, power, sup, link):
        lost, generation = link.lost(1), link.module_generation
        emu.hang(True)                  # the next health AT and the channel's probes: silent
        with trio.fail_after(60):
            await sup.at.wait_silent()
        emu.hang(False)                 # ... and it answers the supervisor's resync
        with trio.fail_after(60):
            await wait_state(sup, State.RECOVERING)
            await wait_state(sup, State.SERVING)
        assert [(s.step, s.ok) for s in sup.last_ladder] == [("resync", True)]
        assert sup.resyncs == 1 and sup.troubles["silent"] == 1
        assert sup.schedule.total == 0 and power.calls == []   # no reboot, no back-off
        assert not lost.is_set() and link.module_generation == generation  # sockets stay
        assert link.serving(1)


async def test_silence_is_reported_once_and_climbs_the_ladder(mock_clock):
    async with serving_rig() as (emu, power, sup, link):
        emu.hang(True)
        with trio.fail_after(120):
            await wait_state(sup, State.REBOOTING)
        emu.hang(False)
        with trio.fail_after(300):
            await link.wait_serving(1)
        assert sup.troubles["silent"] == 1 and sup.schedule.total == 1
        assert sup.schedule.last_reason.startswith("no_answer: AT and 3 AT probes unanswered")
        assert [(s.step, s.ok) for s in sup.last_ladder] == [
            ("resync", False), ("supply_cut", True), ("wait_ready", True),
        ]
        assert [c for _, c in power.calls] == ["off", "on"]


async def test_echo_while_ate0_is_in_effect_is_a_module_reset_not_a_ladder(mock_clock):
    async with serving_rig() as (emu, power, sup, link):
        lost = link.lost(1)
        # a module that restarted without the host seeing RDY has its echo back on (A3)
        await sup.at.run("ATE1")
        with trio.fail_after(120):
            await wait_state(sup, State.INIT)
            await link.wait_serving(1)
        assert lost.is_set()                    # every socket is gone
        assert sup.module_resets == 1 and sup.silent_reboots == 1
        assert sup.schedule.total == 0 and not sup.ladder_steps and power.calls == []


async def test_hung_module_serves_again_within_45_s_with_the_shipped_defaults(mock_clock):
    """Worst case: the module hangs right after a health check, with no traffic (the next health
    `AT` is the first command to notice); supply cut for the shipped 12 s."""
    defaults = ModemConfig()
    async with emulator() as emu:
        power = EmuPower(emu)                 # supply_off_seconds = 12, the shipped default
        cfg = make_cfg(emu.tty_path, health_interval=defaults.health_interval,
                       health_timeout=defaults.health_timeout)
        async with running(cfg, power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            checks = sup.health_checks
            await wait_for(lambda: sup.health_checks > checks, step=0.1)  # hang <= 0.1 s after it
            hung_at = trio.current_time()
            emu.hang(True)
            with trio.fail_after(120):
                await wait_state(sup, State.REBOOTING)
                detected = trio.current_time() - hung_at
                await wait_state(sup, State.SERVING)
            back = trio.current_time() - hung_at
            ladder = [(s.step, s.ok, round(s.seconds, 1)) for s in sup.last_ladder]
            print(f"\nhung module: silence declared and resync failed after {detected:.1f} s, "
                  f"serving again after {back:.1f} s (virtual time); ladder {ladder}")
            assert back <= 45.0


async def test_silent_reboot_mid_command_with_echo_back_on_is_a_module_reset(mock_clock):
    async with serving_rig() as (emu, power, sup, link):
        lost, boots = link.lost(1), emu.boots
        emu.reboot_during("AT", boot="silent")  # the next health AT: restarts, no RDY
        with trio.fail_after(120):
            await wait_state(sup, State.INIT)
            await link.wait_serving(1)
        assert emu.boots == boots + 1
        assert lost.is_set() and sup.module_resets == 1 and sup.silent_reboots == 1
        assert sup.schedule.total == 0 and power.calls == []


async def test_silent_reboot_noticed_by_the_resync_is_a_module_reset(mock_clock):
    async with emulator(boot_delay=5.2) as emu:   # still booting while the channel probes
        power = EmuPower(emu)
        cfg = make_cfg(emu.tty_path, health_interval=10.0)
        async with running(cfg, power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            lost = link.lost(1)
            emu.reboot_during("AT", boot="silent")
            with trio.fail_after(120):
                await sup.at.wait_silent()
                await wait_state(sup, State.INIT)
                await link.wait_serving(1)
            assert lost.is_set() and sup.module_resets == 1 and sup.silent_reboots == 1
            assert sup.resyncs == 0 and [(s.step, s.ok) for s in sup.last_ladder] == [
                ("resync", True)]
            assert sup.schedule.total == 0 and power.calls == []
