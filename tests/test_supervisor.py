"""The supervisor against the emulator over a real pty, in virtual time (MockClock)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import trio

from modemd.at.channel import AtTimeout
from modemd.emulator import Emulator, EmulatorConfig
from modemd.link import ModemLink
from modemd.serial import SerialPort
from modemd.supervisor.power import NoPowerBackend
from modemd.supervisor.states import State, Timings
from modemd.supervisor.supervisor import Supervisor

from .supervisor_helpers import EmuPower, make_cfg, replace_modem, running, visited, wait_state


def emulator(family="bg96", **kw):
    kw.setdefault("boot_delay", 0.5)
    kw.setdefault("qiact_delay", 1.0)
    return Emulator.open(EmulatorConfig(family=family, **kw))


async def test_bring_up_to_serving(mock_clock, caplog):
    caplog.set_level(logging.DEBUG)
    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path), connections=lambda: 3) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            assert visited(sup) == [
                "waiting_ready", "init", "sim", "cs_registration", "ps_registration",
                "configuring", "activating", "serving",
            ]
            bring_up = [
                "ATE0", "AT+CMEE=1", "AT+CGMM", "AT+CGMR", "AT+CGSN", "AT+QISDE=0",
                "AT+CREG=2", "AT+CGREG=2", "AT+CEREG=2",
                "AT+QISTATE?", "AT+CPIN?", "AT+CREG?", "AT+CGREG?",
                "AT+QICSGP=1",  # what a context found active was activated with
                'AT+QICSGP=1,1,"internet","user","s3cret-pw",1',
                "AT+QIACT?", "AT+QIACT=1", "AT+QIACT?",
            ]
            assert emu.commands == bring_up
            addr = link.context(1).addresses[0]
            assert link.at is not None and link.profile.name == "bg96"
            assert link.identity["model"]
            assert link.state == "serving"
            assert link.status_text == f"serving, {addr}, 3 connections"
            assert sup.healthy()
    assert "s3cret-pw" not in caplog.text


async def test_sim_not_ready_reboots_after_20s(mock_clock):
    async with emulator() as emu:
        emu.set_sim_busy(True)  # +CME ERROR: 14 for ever (an absent SIM is a stop state: test_sim)
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            t_sim = await wait_state(sup, State.SIM)
            assert link.status_text.startswith("waiting for SIM")
            t_reboot = await wait_state(sup, State.REBOOTING)
            assert t_reboot - t_sim == pytest.approx(20.0, abs=0.5)
            assert sup.schedule.last_reason.startswith("sim_not_ready")
            emu.set_sim_busy(False)
            with trio.fail_after(300):
                await link.wait_serving(1)
            assert "AT+CFUN=1,1" in emu.commands   # power.backend none: the software reset
            assert sup.schedule.total == 1


async def test_cs_registration_reboots_after_90s(mock_clock):
    async with emulator(registered=False) as emu:
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            t_cs = await wait_state(sup, State.CS_REGISTRATION)
            t_reboot = await wait_state(sup, State.REBOOTING)
            assert t_reboot - t_cs == pytest.approx(90.0, abs=1.0)
            assert sup.schedule.last_reason.startswith("cs_registration")


async def test_no_ps_registration_configures_then_cycles_cfun(mock_clock):
    async with emulator("bg95", registered=False) as emu:      # BG95: no CS step
        async with running(make_cfg(emu.tty_path, model="bg95")) as (sup, link):
            t_ps = await wait_state(sup, State.PS_REGISTRATION)
            t_cfg = await wait_state(sup, State.CONFIGURING)
            assert t_cfg - t_ps == pytest.approx(60.0, abs=2.5)   # "go on after 60 s either way"
            await wait_state(sup, State.RECOVERING)
            await wait_state(sup, State.PS_REGISTRATION)
            emu.set_registered(True)
            with trio.fail_after(300):
                await link.wait_serving(1)
            cmds = emu.commands
            i = cmds.index("AT+CFUN=0")
            assert cmds[i - 1].startswith("AT+QICSGP=1,")          # configure, then the radio
            assert cmds[i + 1] == "AT+CFUN=1"
            assert sup.schedule.total == 0 and sup.cfun_cycles == 1


async def test_no_ps_registration_at_all_ends_in_a_reboot(mock_clock):
    async with emulator("bg95", registered=False) as emu:
        async with running(make_cfg(emu.tty_path, model="bg95")) as (sup, link):
            await wait_state(sup, State.REBOOTING)
            # after the CFUN cycle it went on to QIACT, which the unregistered module refused 3x
            assert sup.schedule.last_reason.startswith("activation_failed")
            assert emu.commands.count("AT+QIACT=1") == 3
            assert emu.commands.count("AT+QIDEACT=1") == 2


async def test_qiact_unanswered_150s_reboots(mock_clock):
    async with emulator() as emu:
        emu.set_qiact_delay(1000.0)
        async with running(make_cfg(emu.tty_path), power=EmuPower(emu)) as (sup, link):
            t_act = await wait_state(sup, State.ACTIVATING)
            t_reboot = await wait_state(sup, State.REBOOTING)
            assert t_reboot - t_act == pytest.approx(150.0, abs=1.0)
            assert sup.schedule.last_reason == "qiact_timeout: no answer to AT+QIACT in 150 s"
            emu.set_qiact_delay(1.0)
            with trio.fail_after(600):
                await link.wait_serving(1)


async def test_qiact_error_retries_then_serves(mock_clock):
    async with emulator() as emu:
        emu.qiact_fail(2)
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            with trio.fail_after(600):
                await link.wait_serving(1)
            assert emu.commands.count("AT+QIACT=1") == 3
            assert sup.schedule.total == 0 and sup.pdp.activation_failures == 0


async def test_pdpdeact_deactivates_resets_sockets_and_reactivates(mock_clock):
    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            lost = link.lost(1)
            n_before = len(emu.commands)
            emu.pdp_deactivate(1)
            with trio.fail_after(60):
                await lost.wait()                 # every socket of the context is reset
                await wait_state(sup, State.DEACTIVATING)
                await wait_state(sup, State.SERVING)
            assert link.serving(1)
            assert emu.commands[n_before:] == ["AT+QIDEACT=1", "AT+QIACT?", "AT+QIACT=1", "AT+QIACT?"]
            assert sup.pdp.cycles["pdpdeact"] == 1
            assert sup.schedule.total == 0


async def test_qideact_unanswered_40s_reboots(mock_clock):
    async with emulator(qideact_delay=100.0) as emu:
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            emu.pdp_deactivate(1)
            t_deact = await wait_state(sup, State.DEACTIVATING)
            t_reboot = await wait_state(sup, State.REBOOTING)
            assert t_reboot - t_deact == pytest.approx(40.0, abs=0.5)
            assert sup.schedule.last_reason == "qideact_timeout: no answer to AT+QIDEACT in 40 s"


async def test_five_failed_opens_cycle_the_context(mock_clock):
    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            n_before = len(emu.commands)
            for _ in range(4):
                link.report_open(1, False)
            link.report_open(1, True)           # a success breaks the run
            for _ in range(5):
                link.report_open(1, False)
            with trio.fail_after(60):
                await wait_state(sup, State.DEACTIVATING)
                await wait_state(sup, State.SERVING)
            assert emu.commands[n_before:] == ["AT+QIDEACT=1", "AT+QIACT?", "AT+QIACT=1", "AT+QIACT?"]
            assert sup.pdp.cycles["open_failures"] == 1


async def test_unsolicited_rdy_means_module_reset(mock_clock):
    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            lost = link.lost(1)
            generation = link.module_generation
            emu.inject(b"\r\nRDY\r\n")
            with trio.fail_after(60):
                await lost.wait()
                await wait_state(sup, State.INIT)
                await link.wait_serving(1)
            assert link.module_generation > generation
            assert sup.module_resets == 1
            assert emu.commands.count("ATE0") == 2           # back through init
            assert sup.schedule.total == 0                   # not a reboot of ours


async def test_unsolicited_powered_down_powers_the_module_on_again(mock_clock):
    async with emulator() as emu:
        power = EmuPower(emu, supply=False, pwrkey=True)
        async with running(make_cfg(emu.tty_path), power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            await emu.pwrkey()     # somebody pressed the key: POWERED DOWN, the module is off
            with trio.fail_after(120):
                await wait_state(sup, State.POWERING_ON)
                await link.wait_serving(1)
            assert [c for _, c in power.calls] == ["pwrkey"]
            assert sup.module_resets == 1 and sup.schedule.total == 0


async def test_flowchart_reboot_of_an_answering_module_goes_through_qpowd(mock_clock):
    async with emulator() as emu:
        power = EmuPower(emu)
        async with running(make_cfg(emu.tty_path), power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            sup.fire_reboot("sim_not_ready: a flowchart rule")
            await wait_state(sup, State.REBOOTING)
            assert sup.schedule.last_reason == "sim_not_ready: a flowchart rule"
            with trio.fail_after(300):
                await link.wait_serving(1)
            assert [step.step for step in sup.last_ladder] == [
                "resync", "qpowd", "supply_cut", "wait_ready"
            ]
            assert "AT+QPOWD=1" in emu.commands
            assert [c for _, c in power.calls] == ["off", "on"]
            off, on = power.calls[0][0], power.calls[1][0]
            assert on - off == pytest.approx(12.0)


async def test_qiclose_unanswered_by_a_silent_module_reboots(mock_clock):
    async with emulator() as emu:
        power = EmuPower(emu)
        cfg = make_cfg(emu.tty_path, health_interval=3600.0)
        async with running(cfg, power=power) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            emu.hang(True)
            t0 = trio.current_time()
            with pytest.raises(AtTimeout):     # the socket layer's QICLOSE: 10 s, then 3 probes
                await link.at.qiclose(0)
            t_reboot = await wait_state(sup, State.REBOOTING)
            # 10 s (its manual time) + 3 probes of 1 s + the supervisor's 2 resync probes
            assert t_reboot - t0 == pytest.approx(15.0, abs=0.5)
            assert sup.schedule.last_reason.startswith(
                "no_answer: AT+QICLOSE and 3 AT probes unanswered")
            with trio.fail_after(300):
                await link.wait_serving(1)


@pytest.mark.parametrize("family", ["bg95", "generic", "bc25", "bg96", "rg500u"])
async def test_every_family_is_detected_and_served(mock_clock, family):
    async with emulator(family) as emu:
        async with running(make_cfg(emu.tty_path, model="auto")) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            assert link.profile.name == family
            assert link.context(1).addresses
            print(family, emu.commands)


async def test_deactivation_failing_three_times_in_a_row_reboots(mock_clock):
    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path), power=EmuPower(emu)) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            emu.qideact_fail(2)                 # two failures, then it works: no reboot
            emu.pdp_deactivate(1)
            with trio.fail_after(120):
                await wait_state(sup, State.DEACTIVATING)
                await wait_state(sup, State.SERVING)
            assert sup.schedule.total == 0 and sup.pdp.deactivation_failures == 0
            emu.qideact_fail(3)
            emu.pdp_deactivate(1)
            with trio.fail_after(120):
                await wait_state(sup, State.REBOOTING)
            assert sup.schedule.last_reason == "deactivation_failed: AT+QIDEACT=1 failed 3 times in a row"
            assert emu.commands.count("AT+QIDEACT=1") == 3 + 3
            with trio.fail_after(300):
                await link.wait_serving(1)


async def test_reboot_schedule_exact_times(mock_clock):
    """SIM never ready: reboots 1-4 at once, the 5th after 10 min, the 6th 30 min, then hourly."""
    timings = Timings(sim_poll=5.0)
    cfg = make_cfg("x", health_interval=600.0)
    async with emulator() as emu:
        emu.set_sim_busy(True)
        cfg = replace_modem(cfg, port=emu.tty_path)
        async with running(cfg, timings=dataclasses.replace(timings, pdp_check_interval=600.0)) \
                as (sup, link):
            with trio.fail_after(6 * 3600):
                while sup.schedule.total < 8:
                    await wait_state(sup, State.REBOOTING, timeout=2 * 3600)
                    if sup.schedule.total == 4:
                        t_backoff = await wait_state(sup, State.BACKOFF)
                        assert sup.next_reboot_time == t_backoff + 600.0
                        assert sup.reboot_count == 4
                        assert link.status_text.startswith("waiting before the next reboot (reboot 5 in 10 min: sim_not_ready")
                        assert sup.healthy()
                    await wait_state(sup, State.SIM)
            history = list(sup.schedule.history)
            assert [r.due - r.requested for r in history] == [0, 0, 0, 0, 600, 1800, 3600, 3600]
            assert [r.number for r in history] == list(range(1, 9))
            assert all(r.reason.startswith("sim_not_ready") for r in history)
            # every attempt takes as long (reboot, boot, init, 20 s for the SIM), so the
            # reboots happen at exactly: first failure + k * attempt + 0/600/1800/3600 s delays
            attempt = history[1].requested - history[0].due
            # CFUN=1,1 + boot (RDY after the emulator's 0.5 s, seen at once) + 20 s for the SIM
            assert attempt == pytest.approx(0.5 + 20.0, abs=0.1)
            t0 = history[0].requested
            expected, t = [], t0
            for delay in (0, 0, 0, 0, 600, 1800, 3600, 3600):
                t += delay
                expected.append(t)
                t += attempt
            assert [r.due for r in history] == pytest.approx(expected, abs=0.05)
            print("\nreboots at", [round(r.due - t0, 1) for r in history])
            # the run ends after a healthy hour of serving
            emu.set_sim_busy(False)
            with trio.fail_after(2 * 3600):
                await link.wait_serving(1)
                assert sup.schedule.count == 8
                await trio.sleep(3600.0 + 601.0)
            assert sup.schedule.count == 0 and sup.schedule.total == 8


async def test_periodic_qiact_check_finds_a_silently_lost_context(mock_clock):
    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path)) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            lost = link.lost(1)
            emu.set_registered(False)          # drops the context without a pdpdeact URC
            emu.set_registered(True)
            with trio.fail_after(120):
                await lost.wait()
                await wait_state(sup, State.SERVING)
            assert sup.pdp.cycles["context_lost"] == 1
            assert link.serving(1)


async def test_watchdog_health_stops_when_the_supervisor_is_wedged(mock_clock):
    async def wedged(at):
        await trio.sleep_forever()             # a bug: init never finishes

    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path), reset_stale=wedged) as (sup, link):
            t_init = await wait_state(sup, State.INIT)
            assert sup.healthy()
            await trio.sleep_until(t_init + 180.0 + 29.0)     # init budget + grace
            assert sup.healthy()
            await trio.sleep(2.0)
            assert not sup.healthy()


async def test_watchdog_health_while_serving_follows_the_answers(mock_clock):
    async with emulator() as emu:
        cfg = make_cfg(emu.tty_path, health_interval=30.0, health_timeout=5.0)
        async with running(cfg, power=EmuPower(emu)) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            await trio.sleep(600.0)            # health AT every 30 s keeps it healthy
            assert sup.healthy() and sup.health_checks >= 19 and sup.health_failures == 0


async def test_unknown_model_is_fatal_with_a_clear_message(mock_clock, monkeypatch):
    from modemd.profiles import UnknownModel
    from modemd.supervisor import supervisor as supervisor_module

    def refuse(text):
        raise UnknownModel(f"module identifies as {text!r}, which no profile covers")

    monkeypatch.setattr(supervisor_module, "detect", refuse)
    async with emulator() as emu:
        cfg = make_cfg(emu.tty_path, model="auto")
        link = ModemLink()
        sup = Supervisor(cfg, link, open_port=lambda: SerialPort.open(emu.tty_path, lock_dir=None),
                         power=NoPowerBackend())
        with pytest.raises(UnknownModel, match="no profile covers"), trio.fail_after(300):
            await sup.run()                     # not an exception group: the daemon prints it
        assert link.state == "stopped" and link.at is None
