"""The SIM step of bring-up: AT+CPIN? until READY (flowchart: 20 s, then a reboot), the PIN once per
power-on, and the stop states when the SIM cannot be used (27.007 +CPIN, +CME ERROR 10/11/12/16).

Three wrong PINs lock a SIM with its PUK, a dead gateway in the field. So a PIN the SIM rejected is
never sent again: not in this power-on, not after a reboot, not after a restart of modemd (the
rejection is kept in a small state file as a salted hash of ICCID + PIN). A changed PIN may be tried
once. The last attempt is never spent automatically (where AT+QPINC tells how many are left): the
operator checks the PIN and enters it once by hand.

In a stop state (`sim_pin_required`, `sim_pin_rejected`, `sim_puk_required`, `sim_not_inserted`)
nothing is rebooted and nothing backs off; the status line names the fix. Each asks AT+CPIN? now and
then (never sending a code) and goes on when the answer changes (a card inserted, a PIN or PUK
entered by hand), or at `retry()` (Supervisor.sim_retry: a reload with a new [sim]);
`modemctl reboot` leaves them too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ..at.channel import AtCommandError, CommandLost
from .states import SIM_STOP_STATES, RebootNeeded, State

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor

log = logging.getLogger("modemd.supervisor")

# +CME ERROR codes of 27.007 §9.2 the SIM step acts on
CME_NOT_INSERTED = 10
CME_PIN_REQUIRED = 11
CME_PUK_REQUIRED = 12
CME_SIM_BUSY = 14
CME_INCORRECT_PASSWORD = 16
_CME_CODES = {CME_NOT_INSERTED: "NOT INSERTED", CME_PIN_REQUIRED: "SIM PIN",
              CME_PUK_REQUIRED: "SIM PUK"}

STATE_FILE = "sim-rejected.json"
STATE_FILE_MAX = 64 * 1024
HASH_ROUNDS = 20_000  # PBKDF2 rounds: a file holding no PIN that is slow to search
LOST_RETRIES = 3


@dataclass(frozen=True)
class SimStatus:
    """What the supervisor publishes about the SIM (status and metrics read it)."""

    state: str = "unknown"  # "unknown" | "ready" | a SIM stop state ("sim_pin_required" ...)
    pin_attempts_left: int | None = None  # AT+QPINC="SC"; None: unknown (no QPINC, not asked)
    puk_attempts_left: int | None = None


class RejectedPins:
    """PINs the SIM rejected, as salted hashes of ICCID + PIN in `directory`/sim-rejected.json."""

    def __init__(self, directory: str) -> None:
        self.path = Path(directory) / STATE_FILE if directory else None
        self._salt, self._hashes = self._load()

    def _load(self) -> tuple[bytes, set[str]]:
        if self.path is not None:
            try:
                with self.path.open("rb") as f:
                    data = json.loads(f.read(STATE_FILE_MAX))
                return bytes.fromhex(data["salt"]), {str(h) for h in data["rejected"]}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s unreadable (%s): no rejected PIN on record", self.path, exc)
        return os.urandom(16), set()

    def _digest(self, iccid: str, pin: str) -> str:
        data = f"{iccid}\0{pin}".encode()
        return hashlib.pbkdf2_hmac("sha256", data, self._salt, HASH_ROUNDS).hex()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return self._digest(*key) in self._hashes

    def remember(self, iccid: str, pin: str) -> None:
        self._hashes.add(self._digest(iccid, pin))
        if self.path is None:
            return
        tmp = self.path.with_name(STATE_FILE + ".tmp")
        text = json.dumps({"salt": self._salt.hex(), "rejected": sorted(self._hashes)})
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning(
                "cannot record the rejected PIN in %s (%s): it is remembered only until modemd "
                "stops; make the directory writable by modemd (systemd: StateDirectory=)",
                self.path, exc.strerror or exc,
            )


class SimKeeper:
    """Owns the SIM step of one Supervisor and the `SimStatus` it publishes."""

    def __init__(self, sup: Supervisor, state_dir: str, config_path: str = "") -> None:
        self.sup = sup
        self.status = SimStatus()
        self.rejected = RejectedPins(state_dir)
        self.where = config_path or "the configuration file"
        self.pins_sent = 0                              # AT+CPIN=<pin> written since start
        self._sent: tuple | None = None  # (power-on, PIN) of the last AT+CPIN=<pin> written
        self._retry = trio.Event()

    # -- public ------------------------------------------------------------------------------------
    def retry(self) -> bool:
        """Leave a SIM stop state and ask the SIM again (with the current [sim]). False when the
        supervisor is in none."""
        if self.sup.state not in SIM_STOP_STATES:
            return False
        self._retry.set()
        return True

    async def run(self) -> None:
        """Until the SIM is READY; RebootNeeded after the flowchart's 20 s of "not ready"."""
        while True:
            stop = await self._until_ready_or_stop()
            if stop is None:
                return
            await self._stopped(*stop)

    # -- the step ------------------------------------------------------------------------------------
    def _power_on(self) -> tuple[int, ...]:
        """Changes whenever the module or the card may have restarted (RDY, a reboot, a reset, a
        new port, a card pulled or failed while in use: put back, it asks for its PIN again)."""
        sup = self.sup
        return (sup.boots, sup.schedule.total, sup.module_resets, sup.port_losses, sup.sim_losses)

    async def _until_ready_or_stop(self) -> tuple[State, str, str] | None:
        sup, t = self.sup, self.sup.timings
        sup.enter(State.SIM, t.sim_timeout)
        last = "no answer yet"
        with trio.move_on_after(t.sim_timeout):
            while True:
                last = await self._read()
                if last == "READY":
                    log.info("SIM ready")
                    self.status = SimStatus("ready", *self._counts())
                    if self._sent is not None and self._sent[0] == self._power_on():
                        await self._counters()  # the accepted PIN reset its counter
                    return None
                stop = await self._decide(last)
                if stop is not None:
                    return (*stop, last)
                sup.enter(State.SIM, None, last, keep_deadline=True)
                await trio.sleep(t.sim_poll)
        raise RebootNeeded(
            f"sim_not_ready: (U)SIM not ready within {t.sim_timeout:g} s (AT+CPIN?: {last})"
        )

    async def _read(self) -> str:
        """<code> of AT+CPIN? ("READY", "SIM PIN", ...); a SIM error as its +CPIN word."""
        for attempt in range(LOST_RETRIES):
            try:
                return await self.sup.at.sim_state(self.sup.timings.query_timeout) or "no +CPIN line"
            except AtCommandError as exc:
                return _CME_CODES.get(exc.code or -1, exc.response.final)
            except CommandLost:
                if attempt == LOST_RETRIES - 1:
                    raise
                log.warning("AT+CPIN? lost on the line: asking again")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _decide(self, code: str) -> tuple[State, str] | None:
        if code == "NOT INSERTED":
            return State.SIM_NOT_INSERTED, (
                "no SIM card: insert one (modemd asks again every "
                f"{self.sup.timings.sim_absent_poll:g} s and goes on by itself)"
            )
        if code == "SIM PUK":
            await self._counters()
            return State.SIM_PUK_REQUIRED, (
                "the SIM is locked with its PUK after 3 wrong PINs: unlock it with the PUK from "
                "the SIM's card holder (modemctl at 'AT+CPIN=\"<PUK>\",\"<new PIN>\"'; modemd "
                f"goes on by itself) and set the new PIN in [sim] in {self.where}, then "
                f"`modemctl reload`{self._left()}"
            )
        if code == "SIM PIN":
            return await self._pin()
        return None  # SIM busy / initialising: the flowchart's 20 s decide

    async def _pin(self) -> tuple[State, str] | None:
        pin = self.sup.cfg.sim.pin
        if not pin:
            await self._counters()
            return State.SIM_PIN_REQUIRED, (
                f"the SIM asks for its PIN: set [sim] pin or pin_file in {self.where} and run "
                f"`modemctl reload`{self._left()}"
            )
        iccid = await self._iccid()
        if (iccid, pin) in self.rejected:
            await self._counters()
            return self._rejected_stop("the SIM rejected this PIN before and modemd never sends "
                                       "a rejected PIN again")
        if self._sent == (self._power_on(), pin):  # sent this power-on, its answer lost, and the
            self.rejected.remember(iccid, pin)  # SIM still asks: taken as rejected (never twice)
            await self._counters()
            return self._rejected_stop("the SIM still asks for its PIN after modemd sent it")
        pin_left, _ = await self._counters()
        if pin_left is not None and pin_left <= 1:
            return State.SIM_PIN_REQUIRED, (
                f"the SIM has {pin_left} PIN attempt left and modemd never spends the last one: "
                "check [sim] pin and enter it once by hand (modemctl at 'AT+CPIN=\"<PIN>\"'; modemd "
                "goes on by itself)" + self._left()
            )
        return await self._send(iccid, pin)

    async def _send(self, iccid: str, pin: str) -> tuple[State, str] | None:
        self._sent = (self._power_on(), pin)
        self.pins_sent += 1
        log.info("the SIM asks for its PIN: sending the configured PIN (once this power-on)")
        try:
            await self.sup.at.enter_pin(pin)
        except AtCommandError as exc:
            if exc.code == CME_INCORRECT_PASSWORD:
                self.rejected.remember(iccid, pin)
                await self._counters()
                return self._rejected_stop("the SIM rejected the PIN (+CME ERROR: 16)")
            if exc.code == CME_SIM_BUSY:
                self._sent = None  # not checked: the SIM was busy
            log.warning("AT+CPIN=<PIN> refused: %s", exc.response.final)
            return None
        except CommandLost:
            log.warning("AT+CPIN=<PIN>: the answer was lost; AT+CPIN? tells")
            return None
        log.info("the SIM accepted the PIN")
        return None

    def _rejected_stop(self, why: str) -> tuple[State, str]:
        return State.SIM_PIN_REJECTED, (
            f"{why}: put the right PIN in [sim] pin or pin_file in {self.where} and run `modemctl "
            f"reload` (a changed PIN is tried once){self._left()}"
        )

    async def _stopped(self, state: State, message: str, code: str) -> None:
        """Stay in `state` (no reboot, no back-off) until retry(), or until AT+CPIN?, asked
        slowly, says something else than `code` (a SIM inserted; a PIN or PUK entered by hand)."""
        sup = self.sup
        self._retry = trio.Event()
        self.status = SimStatus(state.value, *self._counts())
        sup.enter(state, None, message)
        log.error("%s: %s", state.value, message)
        while True:
            with trio.move_on_after(sup.timings.sim_absent_poll):
                await self._retry.wait()
            if self._retry.is_set():
                log.info("%s: asking the SIM again", state.value)
                return
            now = await self._read()
            if now != code:
                log.info("%s: the SIM now says %s", state.value, now)
                return

    # -- helpers ---------------------------------------------------------------------------------------
    async def _iccid(self) -> str:
        try:
            return await self.sup.at.iccid()
        except (AtCommandError, CommandLost) as exc:
            log.info("no ICCID (%s): rejected PINs are recorded without it", exc)
            return ""

    async def _counters(self) -> tuple[int | None, int | None]:
        """AT+QPINC="SC" where the family has it; the counts go into the published status."""
        try:
            pin_left, puk_left = await self.sup.at.pin_counters()
        except (AtCommandError, CommandLost):
            pin_left = puk_left = None
        self.status = SimStatus(self.status.state, pin_left, puk_left)
        return pin_left, puk_left

    def _counts(self) -> tuple[int | None, int | None]:
        return self.status.pin_attempts_left, self.status.puk_attempts_left

    def _left(self) -> str:
        pin_left, puk_left = self._counts()
        parts = [f"{n} {what} attempt{'' if n == 1 else 's'} left"
                 for n, what in ((pin_left, "PIN"), (puk_left, "PUK")) if n is not None]
        return f" ({', '.join(parts)})" if parts else ""
