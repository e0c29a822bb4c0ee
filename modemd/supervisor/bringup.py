"""Power-on to "ready for QIACT": the steps of the manuals' flowchart (seeds-comparison §2.1).

Every wait is bounded by a cancel scope and decided by what the module says (RDY, an answer,
`+CPIN: READY`, `<stat>` 1 or 5); sleeps are only the polling periods between questions.
A rule that says "reboot the module" raises RebootNeeded with the reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..at.channel import AtCommandError, AtModuleReset, ChannelClosed, CommandLost
from ..at.commands import CFUN, CS_REGISTRATION, ECHO_OFF, NUMERIC_ERRORS, QISDE_OFF, QuectelAt
from ..at.urc import after_prefix, split_fields, to_int
from .states import RebootNeeded, State

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor

log = logging.getLogger("modemd.supervisor")

REGISTERED = (1, 5)  # home network, roaming
LOST_RETRIES = 3     # a step whose command was lost on the line is asked again this often


async def query(at: QuectelAt, text: str, prefix: str, timeout: float) -> list[list[str]]:
    """The fields of each `prefix` line of a read command, with a short deadline. A command lost
    on the line (the module answered the channel's probe) is asked again: a single lost
    AT+CREG? costs seconds, never a reboot."""
    for attempt in range(LOST_RETRIES):
        try:
            resp = await at.run(text, prefix=prefix, timeout=timeout)
            return [split_fields(after_prefix(line)) for line in resp.lines]
        except CommandLost:
            if attempt == LOST_RETRIES - 1:
                raise
            log.warning("%s lost on the line: asking again", text)
    raise AssertionError("unreachable")  # pragma: no cover


async def setting(at: QuectelAt, text: str) -> bool:
    """A start-up setting; an ERROR is logged, not fatal (the family may lack the option)."""
    name = text.split("=", 1)[0].split("?", 1)[0]
    prefix = name[2:] + ":" if name.startswith("AT+") else None  # e.g. +QICFG: echoes the value
    for attempt in range(LOST_RETRIES):
        try:
            await at.run(text, prefix=prefix)
            return True
        except AtCommandError as exc:
            log.warning("start-up setting %s refused: %s", text, exc.response.final)
            return False
        except CommandLost:
            if attempt == LOST_RETRIES - 1:
                raise
            log.warning("start-up setting %s lost on the line: asking again", text)
    return False  # pragma: no cover


# -- power on / RDY ----------------------------------------------------------------------------
async def wait_ready(sup: Supervisor, timeout: float, since: int) -> str | None:
    """Wait until the module has booted: `RDY` (after boot count `since`) or an answer to `AT`.

    A `POWERED DOWN` after that `RDY` cancels it (a PWRKEY pulse that switched the module off
    again). Returns "RDY" / "answered", or None when `timeout` passed or the port went away.
    """
    t = sup.timings
    with trio.move_on_after(timeout):
        while True:
            if sup.boots > since and sup.module_up:
                return "RDY"
            if sup.port_lost is not None:
                return None
            changed = sup.boot_event
            try:
                if await sup.at.probe(t.probe_timeout):  # an ERROR is an answer too
                    return "answered"
            except AtModuleReset:
                pass  # RDY arrived with the probe in flight: the boot check below sees it
            except ChannelClosed:
                if sup.port_lost is not None:
                    return None
                await trio.sleep(t.probe_interval)  # the channel is being replaced
                continue
            if sup.boots > since and sup.module_up:
                return "RDY"
            with trio.move_on_after(t.probe_interval):
                await changed.wait()
    return None


async def power_on(sup: Supervisor) -> None:
    """waiting_ready -> (powering_on -> waiting_ready): the module answers, or RebootNeeded."""
    t = sup.timings
    mark = sup.boots
    sup.enter(State.WAITING_READY, t.boot_timeout)
    how = await wait_ready(sup, t.boot_timeout, mark)
    if how is not None:
        log.info("module is up (%s)", how)
        return
    if sup.port_lost is not None:
        return
    power = sup.power
    if not power.has_pwrkey:
        raise RebootNeeded(
            f"boot_failed: the module did not answer within {t.boot_timeout:g} s and no PWRKEY "
            "is wired to switch it on"
        )
    mark = sup.boots
    sup.enter(State.POWERING_ON, power.pwrkey_seconds + 30.0, "PWRKEY pulse")
    log.warning("module silent for %g s: pulsing PWRKEY to switch it on", t.boot_timeout)
    await sup.pwrkey_pulse()
    sup.enter(State.WAITING_READY, t.boot_timeout, "after PWRKEY")
    how = await wait_ready(sup, t.boot_timeout, mark)
    if how is None and sup.port_lost is None:
        raise RebootNeeded(
            f"boot_failed: no RDY and no answer within {t.boot_timeout:g} s after a PWRKEY pulse"
        )
    log.info("module is up after PWRKEY (%s)", how)


# -- init ----------------------------------------------------------------------------------------
async def init(sup: Supervisor) -> None:
    """ATE0, CMEE, identification, QISDE=0, the family's QICFG settings, TCP keepalive, close
    stale sockets."""
    sup.enter(State.INIT, 180.0)
    if await setting(sup.at, ECHO_OFF):
        sup.at.echo_disabled()  # an echo from now on: the module restarted unseen (A3)
    await setting(sup.at, NUMERIC_ERRORS)
    await sup.identify()
    at, profile = sup.at, sup.profile
    if profile.has_qisde:
        await setting(at, QISDE_OFF)
    for text in profile.init_commands:
        await setting(at, text)
    if getattr(sup.cfg, "listens", ()):
        for text in profile.server_init_commands:
            await setting(at, text)
    await _keepalive(sup)
    for text in at.registration_urc_commands():  # URCs with lac/ci/AcT (the radio task's input)
        await setting(at, text)
    await sup.reset_stale(at)


async def close_stale_sockets(at: QuectelAt, context_id: int = 1) -> int:
    """Default stale-socket reset: AT+QISTATE, then AT+QICLOSE for every socket it lists."""
    try:
        sockets = await at.qistate((context_id,))
    except AtCommandError as exc:
        log.warning("AT+QISTATE refused (%s): cannot list stale sockets", exc.response.final)
        return 0
    for sock in sockets:
        log.info("closing stale socket %d (%s %s)", sock.connect_id, sock.service_type, sock.state)
        try:
            await at.qiclose(sock.connect_id)
        except AtCommandError as exc:
            log.warning("AT+QICLOSE=%d refused: %s", sock.connect_id, exc.response.final)
    return len(sockets)


# -- SIM and registration ------------------------------------------------------------------------
async def wait_sim(sup: Supervisor) -> None:
    """AT+CPIN? until READY (the flowchart reboots after 20 s); the PIN and the stop states of a
    SIM that cannot be used are supervisor/sim.py's."""
    await sup.sim_keeper.run()


async def registration_stat(at: QuectelAt, command: str, timeout: float) -> int | None:
    """<stat> of AT+CREG?/CGREG?/CEREG?/C5GREG? ("+CGREG: <n>,<stat>[,...]")."""
    prefix = command[2:].split("?")[0] + ":"
    rows = await query(at, command, prefix, timeout)
    if not rows or len(rows[0]) < 2:
        return None
    return to_int(rows[0][1])


async def wait_cs(sup: Supervisor) -> None:
    """AT+CREG? until <stat> 1 or 5; the flowchart reboots after 90 s."""
    t = sup.timings
    sup.enter(State.CS_REGISTRATION, t.cs_timeout)
    stat: int | None = None
    with trio.move_on_after(t.cs_timeout):
        while True:
            try:
                stat = await registration_stat(sup.at, CS_REGISTRATION, t.query_timeout)
            except AtCommandError as exc:
                log.warning("AT+CREG? refused (%s): skipping the CS step", exc.response.final)
                return
            if stat in REGISTERED:
                log.info("registered on CS domain (stat %s)", stat)
                return
            await trio.sleep(t.registration_poll)
    raise RebootNeeded(
        f"cs_registration: not registered on CS domain within {t.cs_timeout:g} s "
        f"(AT+CREG? stat {stat})"
    )


async def wait_ps(sup: Supervisor, timeout: float) -> bool:
    """AT+CGREG?/CEREG? (the family's list) until <stat> 1 or 5; False after `timeout`."""
    t = sup.timings
    sup.enter(State.PS_REGISTRATION, timeout)
    commands = list(sup.profile.ps_registration)
    stats: dict[str, int | None] = {}
    with trio.move_on_after(timeout):
        while commands:
            for command in list(commands):
                try:
                    stat = await registration_stat(sup.at, command, t.query_timeout)
                except AtCommandError:
                    commands.remove(command)  # not on this module / firmware
                    continue
                stats[command] = stat
                if stat in REGISTERED:
                    log.info("registered on PS domain (%s stat %s)", command, stat)
                    return True
            await trio.sleep(t.registration_poll)
    log.warning(
        "no PS registration within %g s (%s); going on (flowchart)",
        timeout, ", ".join(f"{c} {s}" for c, s in stats.items()) or "no answer",
    )
    return False


async def _keepalive(sup: Supervisor) -> None:
    """[proxy] keepalive_seconds as the module's TCP keepalive (the ACK rule only runs while
    data is unacknowledged: without it an idle connection to a dead peer is never noticed)."""
    seconds = sup.cfg.proxy.keepalive_seconds
    text = sup.at.keepalive_command(seconds)
    if text is not None:
        await setting(sup.at, text)
    elif seconds > 0 and not sup.keepalive_noted:
        sup.keepalive_noted = True
        log.info("%s has no TCP keepalive setting: an idle connection whose peer died is "
                 "noticed only when data is sent to it", sup.profile.name)


async def cfun_cycle(sup: Supervisor) -> None:
    """AT+CFUN=0 then AT+CFUN=1: the chart's remedy for a missing PS registration."""
    sup.enter(State.RECOVERING, 2 * sup.profile.timeout(CFUN) + 5, f"{CFUN}=0/1")
    log.warning("no PS registration: cycling the radio (AT+CFUN=0, AT+CFUN=1)")
    sup.cfun_cycles += 1
    for level in (0, 1):
        try:
            await sup.at.cfun(level)
        except AtCommandError as exc:
            log.warning("AT+CFUN=%d refused: %s", level, exc.response.final)
