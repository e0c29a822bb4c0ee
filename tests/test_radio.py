"""The radio task and registration loss: the supervisor against the emulator over a real pty, in
virtual time (MockClock). Each family's signal read-out reaches the right gauges; registration
URCs of every field count arrive through the channel; a registration lost while serving is a state
and a metric, never a reboot."""

from __future__ import annotations

import pytest
import trio

from modemd import metrics_provider
from modemd.at.urc import Registration
from modemd.emulator import Emulator, EmulatorConfig
from modemd.metrics import Metrics
from modemd.supervisor.states import State

from .supervisor_helpers import make_cfg, running, wait_state

# what each family's read-out carries (profile.signal_query), in the emulator's values below
EXTENDED = {"bg96": "qcsq", "bg95": "qcsq", "generic": None, "bc25": "qeng0",
            "rg500u": "qeng_servingcell"}


def emulator(family="bg96", **kw):
    kw.setdefault("boot_delay", 0.5)
    kw.setdefault("qiact_delay", 1.0)
    return Emulator.open(EmulatorConfig(family=family, **kw))


def gauges(link) -> Metrics:
    """The provider's mapping of link.radio onto a fresh registry."""
    m = Metrics()
    metrics_provider._radio(link.radio, m)
    return m


async def sampled(link, after: int = 0) -> None:
    with trio.fail_after(300):
        while link.radio.polls <= after or link.radio.sampled_at is None:
            await trio.sleep(1.0)


@pytest.mark.parametrize("family", ["bg96", "bg95", "generic", "bc25", "rg500u"])
async def test_each_family_read_out_reaches_the_right_gauges(mock_clock, family):
    async with emulator(family) as emu:
        emu.set_radio(csq=17, ber=2, rsrp=-101, rsrq=-13, sinr=7.4, operator="Radio Test",
                      numeric="26201")
        cfg = make_cfg(emu.tty_path, model=family)
        async with running(cfg, radio=True) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            await sampled(link)
            m = gauges(link)
            v = m.value
            assert v("modemd_signal_csq") == 17 and v("modemd_signal_rssi_dbm") == -79
            kind = EXTENDED[family]
            if kind is None:   # AT+CSQ only: the LTE values stay unknown (NaN), not 0
                assert v("modemd_signal_rsrp_dbm") != v("modemd_signal_rsrp_dbm")
                assert link.radio.quality is None
            else:
                assert v("modemd_signal_rsrp_dbm") == -101
                assert v("modemd_signal_rsrq_db") == -13
                # QCSQ: 1/5 dB steps; QENG prints whole dB
                assert v("modemd_signal_sinr_db") == (7.4 if kind == "qcsq" else 7)
            assert link.radio.operator.name == "Radio Test"
            for kind_ in link.profile.registration_kinds:
                domain = {"CREG": "cs", "CGREG": "ps", "CEREG": "eps", "C5GREG": "5gs"}[kind_]
                assert v("modemd_registration_state", {"domain": domain}) == 1
            assert link.radio.registered is True
            # later values arrive with the next poll, without anyone asking
            polls = link.radio.polls
            emu.set_radio(csq=5, rsrp=-118)
            await sampled(link, polls)
            m = gauges(link)
            assert m.value("modemd_signal_csq") == 5
            if kind is not None:
                assert m.value("modemd_signal_rsrp_dbm") == -118


async def test_registration_urcs_and_read_responses_with_every_field_count(mock_clock):
    """<n> 0..5 as each report allows: read responses of 2 to 11 fields and URCs of 1 to 10,
    through the real channel, all with the right <stat>."""
    async with emulator("rg500u") as emu:
        async with running(make_cfg(emu.tty_path, model="rg500u")) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            at = link.at
            urcs = at.channel.subscribe()
            seen: dict[tuple[str, int], list[Registration]] = {}
            tops = {"CREG": 3, "CGREG": 4, "CEREG": 5, "C5GREG": 2}
            read_counts, urc_counts = set(), set()
            for kind, top in tops.items():
                for n in range(top + 1):
                    for other in tops:  # only this report, at this <n>
                        await at.run(f"AT+{other}={n if other == kind else 0}")
                    read = await at.registration_report(kind)
                    assert (read.n, read.stat) == (n, 1)
                    read_counts.add(read.fields)
                    emu.lose_registration(3)
                    emu.regain_registration()
                    await at.run("AT")  # the URCs were printed before its answer
                    got = []
                    while True:
                        try:
                            urc = urcs.receive_nowait()
                        except trio.WouldBlock:
                            break
                        if isinstance(urc, Registration):
                            got.append(urc)
                    seen[(kind, n)] = got
                    if n == 0:
                        assert got == []
                        continue
                    assert [(r.kind, r.stat, r.n) for r in got] == [(kind, 3, None), (kind, 1, None)]
                    urc_counts |= {r.fields for r in got}
            assert read_counts == {2, 5, 6, 7, 9, 8, 11}
            assert urc_counts == {1, 4, 5, 6, 7, 8, 10}
            assert sup.schedule.total == 0


async def test_registration_lost_while_serving_is_a_state_not_a_reboot(mock_clock):
    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path), radio=True) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            lost = link.lost(1)
            emu.lose_registration(2)                   # searching; the network keeps the context
            with trio.fail_after(60):
                await wait_state(sup, State.REGISTRATION_LOST)
            assert link.radio.losses == 1 and link.radio.registered is False
            m = gauges(link)
            assert m.value("modemd_registration_state", {"domain": "eps"}) == 2
            assert m.value("modemd_registration_losses_total") == 1
            # ten minutes without the network: polled, never rebooted, sockets kept
            await trio.sleep(600)
            assert sup.state is State.REGISTRATION_LOST and sup.schedule.total == 0
            assert not lost.is_set() and link.context(1).up
            assert emu.commands.count("AT+CEREG?") > 50      # the periodic check (10 s)
            emu.regain_registration()
            with trio.fail_after(60):
                await wait_state(sup, State.SERVING)
            assert not lost.is_set() and not sup.pdp.cycles  # the context stayed: nothing reset
            assert "AT+QIACT?" in emu.commands[-8:]
            assert link.radio.losses == 1


async def test_registration_found_lost_by_the_periodic_check_alone(mock_clock):
    """No URC (reports switched off): the radio task's read of AT+CEREG? finds it."""
    async with emulator() as emu:
        async with running(make_cfg(emu.tty_path), radio=True) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            for kind in ("CREG", "CGREG", "CEREG"):
                await link.at.run(f"AT+{kind}=0")
            emu.lose_registration(3)                   # denied
            t0 = trio.current_time()
            t_lost = await wait_state(sup, State.REGISTRATION_LOST, timeout=120)
            assert t_lost - t0 <= sup.timings.radio_poll + 5
            assert {r.stat for k, r in link.radio.registration.items() if k != "CREG"} == {3}
            emu.regain_registration()
            await wait_state(sup, State.SERVING, timeout=120)
            assert sup.schedule.total == 0


@pytest.mark.parametrize("family", ["bg96", "bc25"])
async def test_context_dropped_during_the_loss_is_activated_again_when_it_returns(
        mock_clock, family):
    """The network drops the context 30 s into the loss (BG96: +QIURC: "pdpdeact"; BC25 has no
    such URC: the AT+CGACT? check when registration returns finds it)."""
    async with emulator(family) as emu:
        async with running(make_cfg(emu.tty_path, model=family), radio=True) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            lost = link.lost(1)
            emu.lose_registration(2, pdpdeact_after=30.0)
            await wait_state(sup, State.REGISTRATION_LOST, timeout=60)
            await trio.sleep(120)
            assert sup.state is State.REGISTRATION_LOST     # no activation without the network
            assert lost.is_set() == (family == "bg96")       # the URC reset its sockets at once
            emu.regain_registration()
            with trio.fail_after(300):
                await wait_state(sup, State.SERVING)
                await link.wait_serving(1)
            assert lost.is_set()
            assert sup.pdp.cycles["context_lost"] == 1 and sup.schedule.total == 0


async def test_control_socket_sets_the_radio_and_loses_registration():
    """The emulator's control commands (what scripts and the CLI use) over a real channel."""
    from modemd.emulator.control import run_command

    from .conftest import open_stack

    async with open_stack("bg95") as s:
        emu, at = s.emulator, s.at
        assert await run_command(emu, "radio csq=3 ber=1 rsrp=-119 operator=My_Net") == "ok"
        assert await at.csq_report() == (3, 1)
        assert (await at.signal_quality()).rsrp_dbm == -119
        assert (await at.operator()).name == "My Net"
        assert (await run_command(emu, "radio csq=x")).startswith("error")
        assert (await run_command(emu, "radio colour=red")).startswith("error")
        await at.run("AT+CEREG=2")
        urcs = at.channel.subscribe()
        assert await run_command(emu, "registration lose 3 never") == "ok"
        await at.run("AT")  # the URC is out before the read (else our AT+CEREG? claims it)
        assert (await at.registration_report("CEREG")).stat == 3
        assert await run_command(emu, "registration regain") == "ok"
        await at.run("AT")
        assert (await at.registration_report("CEREG")).stat == 1
        got = [u for u in [urcs.receive_nowait(), urcs.receive_nowait()]]
        assert [(u.kind, u.stat) for u in got] == [("CEREG", 3), ("CEREG", 1)]
        assert (await run_command(emu, "registration lose 1")).startswith("error")
        assert (await run_command(emu, "registration maybe")).startswith("error")
        # the hazard of C1-C4: a URC printed right before the answer has the answer's prefix
        # and is handed over with it; the read form (two fields, a bare <stat>) is the answer
        emu.lose_registration(2)
        read = await at.registration_report("CEREG")
        assert (read.n, read.stat) == (2, 2)
