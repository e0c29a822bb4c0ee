"""The SIM step against the emulator's SIM card (PIN, PUK, attempts on the card), in virtual time."""

from __future__ import annotations

import dataclasses
import logging

import trio

from modemd.config import SimConfig
from modemd.emulator import Emulator, EmulatorConfig
from modemd.supervisor.sim import STATE_FILE
from modemd.supervisor.states import SIM_STOP_STATES, State

from .supervisor_helpers import make_cfg, running, visited, wait_state

PIN = "4711"        # the card's PIN
WRONG = "8642"


def emulator(family="bg96", **kw):
    kw.setdefault("boot_delay", 0.5)
    kw.setdefault("qiact_delay", 1.0)
    kw.setdefault("sim_pin", PIN)
    return Emulator.open(EmulatorConfig(family=family, **kw))


def sim_cfg(tty: str, pin: str = "", model: str = "bg96"):
    return dataclasses.replace(make_cfg(tty, model=model), sim=SimConfig(pin=pin))


async def serving(link) -> None:
    with trio.fail_after(600):
        await link.wait_serving(1)


async def stays(sup, state: State, seconds: float = 3600.0) -> None:
    """No reboot, no back-off, no other state for `seconds` of virtual time."""
    reboots, n = sup.schedule.total, len(sup.history)
    await trio.sleep(seconds)
    assert sup.state is state
    assert sup.schedule.total == reboots and len(sup.history) == n


async def test_ready_sim_sends_no_pin(mock_clock, tmp_path):
    async with emulator() as emu:
        async with running(sim_cfg(emu.tty_path, PIN), state_dir=str(tmp_path)) as (sup, link):
            await serving(link)
            assert emu.sim.cpin_writes == 0
            assert sup.sim.state == "ready"
            assert not any(c.startswith("AT+CPIN=") for c in emu.commands)


async def test_no_pin_configured_stops_in_sim_pin_required(mock_clock, tmp_path):
    async with emulator(sim_locked=True) as emu:
        cfg = sim_cfg(emu.tty_path)
        async with running(cfg, state_dir=str(tmp_path), config_path="/etc/m.toml") as (sup, link):
            await wait_state(sup, State.SIM_PIN_REQUIRED)
            assert link.state == "sim_pin_required"
            assert "set [sim] pin or pin_file in /etc/m.toml" in link.status_text
            assert "3 PIN attempts left" in link.status_text  # AT+QPINC on BG96
            assert (sup.sim.pin_attempts_left, sup.sim.puk_attempts_left) == (3, 10)
            await stays(sup, State.SIM_PIN_REQUIRED)
            assert sup.healthy()                               # the watchdog keeps quiet
            assert emu.sim.cpin_writes == 0
            # the operator adds the PIN; reload calls sim_retry
            sup.cfg = dataclasses.replace(cfg, sim=SimConfig(pin=PIN))
            assert sup.sim_retry()
            await serving(link)
            assert emu.sim.cpin_writes == 1 and emu.sim.cpin_wrong == 0
            assert not sup.sim_retry()                        # not in a stop state any more


async def test_pin_sent_once_per_power_on(mock_clock, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with emulator(sim_locked=True) as emu:
        async with running(sim_cfg(emu.tty_path, PIN), state_dir=str(tmp_path)) as (sup, link):
            await serving(link)
            assert emu.sim.cpin_writes == 1
            assert sup.sim.state == "ready" and sup.sim.pin_attempts_left == 3
            for boots in (2, 3):
                await emu.power_on()                       # a power cycle: the SIM asks again
                await wait_state(sup, State.INIT)
                await serving(link)
                assert emu.sim.cpin_writes == boots
            assert sup.schedule.total == 0
    assert PIN not in caplog.text


async def test_rejected_pin_is_never_sent_again(mock_clock, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with emulator(sim_locked=True) as emu:
        cfg = sim_cfg(emu.tty_path, WRONG)
        async with running(cfg, state_dir=str(tmp_path)) as (sup, link):
            await wait_state(sup, State.SIM_PIN_REJECTED)
            assert emu.sim.cpin_writes == 1 and emu.sim.pin_left == 2
            assert sup.sim.pin_attempts_left == 2 and "2 PIN attempts left" in link.status_text
            await stays(sup, State.SIM_PIN_REJECTED)
            # a module reboot (modemctl reboot) leaves the stop state, and comes back to it
            sup.fire_reboot("modemctl reboot", force=True)
            await wait_state(sup, State.REBOOTING)
            await wait_state(sup, State.SIM_PIN_REJECTED)
            assert emu.sim.cpin_writes == 1
            # sim_retry with the same PIN: still never sent
            assert sup.sim_retry()
            await wait_state(sup, State.SIM)
            await wait_state(sup, State.SIM_PIN_REJECTED)
            assert emu.sim.cpin_writes == 1
        # a new daemon with the same state directory, after a power cycle
        await emu.power_on()
        async with running(cfg, state_dir=str(tmp_path)) as (sup, link):
            await wait_state(sup, State.SIM_PIN_REJECTED)
            await stays(sup, State.SIM_PIN_REJECTED, 600.0)
            assert emu.sim.cpin_writes == 1
            # the attempts are on the card: kept across the power cycle
            assert emu.sim.pin_left == 2 and sup.sim.pin_attempts_left == 2
            # a changed PIN is tried once
            sup.cfg = dataclasses.replace(cfg, sim=SimConfig(pin=PIN))
            assert sup.sim_retry()
            await serving(link)
            assert emu.sim.cpin_writes == 2 and emu.sim.pin_left == 3
        state = (tmp_path / STATE_FILE).read_text()
        assert WRONG not in state and PIN not in state
    assert WRONG not in caplog.text and PIN not in caplog.text


async def test_a_second_wrong_pin_is_tried_once_and_the_last_attempt_never(mock_clock, tmp_path):
    async with emulator(sim_locked=True) as emu:
        cfg = sim_cfg(emu.tty_path, WRONG)
        async with running(cfg, state_dir=str(tmp_path)) as (sup, link):
            await wait_state(sup, State.SIM_PIN_REJECTED)
            sup.cfg = dataclasses.replace(cfg, sim=SimConfig(pin="99999"))
            assert sup.sim_retry()
            await wait_state(sup, State.SIM)
            await wait_state(sup, State.SIM_PIN_REJECTED)
            assert emu.sim.cpin_writes == 2 and emu.sim.pin_left == 1
            sup.cfg = dataclasses.replace(cfg, sim=SimConfig(pin=PIN))   # even the right one
            assert sup.sim_retry()
            await wait_state(sup, State.SIM_PIN_REQUIRED)
            assert "never spends the last one" in link.status_text
            assert emu.sim.cpin_writes == 2 and emu.sim.pin_left == 1
            await stays(sup, State.SIM_PIN_REQUIRED, 600.0)
            assert emu.sim.cpin_writes == 2


async def test_puk_required(mock_clock, tmp_path):
    async with emulator(sim_locked=True) as emu:
        for _ in range(3):
            emu.sim.enter(WRONG)                          # somebody else's three wrong PINs
        writes = emu.sim.cpin_writes
        await emu.power_on()                              # the card keeps its counters
        async with running(sim_cfg(emu.tty_path, PIN), state_dir=str(tmp_path)) as (sup, link):
            await wait_state(sup, State.SIM_PUK_REQUIRED)
            assert link.state == "sim_puk_required" and "PUK" in link.status_text
            assert (sup.sim.pin_attempts_left, sup.sim.puk_attempts_left) == (0, 10)
            await stays(sup, State.SIM_PUK_REQUIRED)
            assert emu.sim.cpin_writes == writes           # no PIN to a PUK-locked card
            # the operator unlocks it by hand (modemctl at): modemd notices by itself
            await sup.at.run(f'AT+CPIN="{emu.sim.puk}","2468"')
            await serving(link)
            assert emu.sim.cpin_writes == writes + 1 and sup.schedule.total == 0


async def test_sim_not_inserted_then_inserted(mock_clock, tmp_path):
    async with emulator(sim_ready=False) as emu:
        async with running(sim_cfg(emu.tty_path), state_dir=str(tmp_path)) as (sup, link):
            await wait_state(sup, State.SIM_NOT_INSERTED)
            assert "no SIM card" in link.status_text
            polls = emu.commands.count("AT+CPIN?")
            await trio.sleep(600.0)
            assert sup.state is State.SIM_NOT_INSERTED and sup.schedule.total == 0
            assert emu.commands.count("AT+CPIN?") > polls      # it keeps looking, slowly
            emu.set_sim_ready(True)
            await serving(link)
            states = visited(sup)
            i = states.index("sim_not_inserted")
            assert states[i + 1:i + 3] == ["sim", "cs_registration"]


async def test_family_without_qpinc_shows_no_counts(mock_clock, tmp_path):
    async with emulator("bc25", sim_locked=True) as emu:
        async with running(sim_cfg(emu.tty_path, model="bc25"), state_dir=str(tmp_path)) as \
                (sup, link):
            await wait_state(sup, State.SIM_PIN_REQUIRED)
            assert sup.sim.pin_attempts_left is None and "attempt" not in link.status_text
            assert not any("QPINC" in c for c in emu.commands)


def test_stop_states_are_states():
    assert {s.value for s in SIM_STOP_STATES} == {
        "sim_pin_required", "sim_pin_rejected", "sim_puk_required", "sim_not_inserted"}


async def test_lost_answer_to_an_accepted_pin_goes_on(mock_clock, tmp_path):
    async with emulator(sim_locked=True) as emu:
        emu.lose_answer(r'AT\+CPIN=.*', part="final")   # the module takes the PIN; its OK is lost
        async with running(sim_cfg(emu.tty_path, PIN), state_dir=str(tmp_path)) as (sup, link):
            await serving(link)
            assert emu.sim.cpin_writes == 1 and emu.lost == ['final AT+CPIN="4711"']
            assert sup.schedule.total == 0


async def test_lost_answer_to_a_wrong_pin_counts_as_rejected(mock_clock, tmp_path):
    async with emulator(sim_locked=True) as emu:
        emu.lose_answer(r'AT\+CPIN=.*', part="final")   # +CME ERROR: 16 lost on the line
        cfg = sim_cfg(emu.tty_path, WRONG)
        async with running(cfg, state_dir=str(tmp_path)) as (sup, link):
            await wait_state(sup, State.SIM_PIN_REJECTED)
            assert "still asks for its PIN after modemd sent it" in link.status_text
            await emu.power_on()                           # a new power-on: still never twice
            await wait_state(sup, State.INIT)
            await wait_state(sup, State.SIM_PIN_REJECTED)
            assert emu.sim.cpin_writes == 1 and emu.sim.pin_left == 2


async def test_a_sim_pulled_while_serving_waits_in_sim_not_inserted_without_a_reboot(
        mock_clock, tmp_path, caplog):
    """The card is pulled while serving (+CPIN: NOT INSERTED, the contexts dropped): every
    socket is reset and bring-up goes back to the SIM step, which stops in sim_not_inserted and
    names the fix. No reboot, no back-off (no reboot brings a card back). Put back: serving."""
    async with emulator() as emu:
        async with running(sim_cfg(emu.tty_path), state_dir=str(tmp_path)) as (sup, link):
            await serving(link)
            emu.set_sim_ready(False)
            await wait_state(sup, State.SIM_NOT_INSERTED)
            assert "no SIM card" in link.status_text and not link.serving(1)
            await stays(sup, State.SIM_NOT_INSERTED, 600.0)
            assert sup.sim_losses == 1 and sup.schedule.total == 0 and sup.module_resets == 0
            emu.set_sim_ready(True)
            await serving(link)
            assert sup.schedule.total == 0 and sup.contexts[0].activations == 2
    assert "sim_lost: +CPIN: NOT INSERTED while serving: every socket is reset; checking the " \
           "SIM again (no reboot)" in caplog.text


async def test_a_locked_sim_put_back_while_running_gets_its_pin_once_more(mock_clock, tmp_path):
    """A PIN-locked card pulled and put back asks for its PIN again: that is a new power-on of
    the card, so the configured PIN is sent once more, not taken for a rejected one."""
    async with emulator(sim_locked=True) as emu:
        async with running(sim_cfg(emu.tty_path, PIN), state_dir=str(tmp_path)) as (sup, link):
            await serving(link)
            assert emu.sim.cpin_writes == 1
            emu.set_sim_ready(False)
            await wait_state(sup, State.SIM_NOT_INSERTED)
            emu.set_sim_ready(True)
            await serving(link)
            assert emu.sim.cpin_writes == 2 and emu.sim.cpin_wrong == 0
            assert sup.schedule.total == 0 and not (tmp_path / STATE_FILE).exists()
