"""The emulated (U)SIM card: PIN, PUK and their attempt counters (3GPP TS 27.007 +CPIN).

The card belongs to the `Emulator`, not to a `Session`: like a real SIM it keeps its counters and
its PIN across reboots and power cycles; only "verified this power-on" starts over at each boot.
"""

from __future__ import annotations

PIN_TRIES = 3    # wrong PINs before the card asks for its PUK
PUK_TRIES = 10   # wrong PUKs before the card is blocked for good

NOT_INSERTED = "NOT INSERTED"
SIM_PIN = "SIM PIN"
SIM_PUK = "SIM PUK"
READY = "READY"
BLOCKED = "BLOCKED"  # no +CPIN code: the card answers +CME ERROR: 13 (SIM failure)
BUSY = "BUSY"        # still initialising: +CME ERROR: 14 (SIM busy; corpus S07)

# +CME ERROR codes (27.007 §9.2)
CME_NOT_ALLOWED = 3
CME_NOT_INSERTED = 10
CME_PIN_REQUIRED = 11
CME_PUK_REQUIRED = 12
CME_SIM_FAILURE = 13
CME_SIM_BUSY = 14
CME_INCORRECT_PASSWORD = 16
CME_TEXT = {
    CME_NOT_ALLOWED: "operation not allowed",
    CME_NOT_INSERTED: "SIM not inserted",
    CME_PIN_REQUIRED: "SIM PIN required",
    CME_PUK_REQUIRED: "SIM PUK required",
    CME_SIM_FAILURE: "SIM failure",
    CME_SIM_BUSY: "SIM busy",
    CME_INCORRECT_PASSWORD: "incorrect password",
}


def check_code(name: str, code: str, lo: int, hi: int) -> str:
    if not isinstance(code, str) or not code.isdigit() or not lo <= len(code) <= hi:
        raise ValueError(f"{name} must be {lo} to {hi} digits, got {code!r}")
    return code


class Sim:
    """One SIM card. `locked`: the PIN lock is on (the card asks for the PIN at every power-on)."""

    def __init__(self, *, inserted: bool = True, locked: bool = False, pin: str = "1234",
                 puk: str = "12345678") -> None:
        self.inserted = bool(inserted)
        self.locked = bool(locked)
        self.pin = check_code("pin", pin, 4, 8)
        self.puk = check_code("puk", puk, 8, 8)
        self.pin_left = PIN_TRIES
        self.puk_left = PUK_TRIES
        self.verified = False
        self.busy = False          # answers +CME ERROR: 14 until cleared (a SIM that never gets ready)
        self.cpin_writes = 0       # every AT+CPIN=... received, right or wrong (tests: "never twice")
        self.cpin_wrong = 0        # of those, the wrong ones

    def power_on(self) -> None:
        """A new power-on: the card asks for its PIN again (counters stay)."""
        self.verified = False

    @property
    def state(self) -> str:
        if not self.inserted:
            return NOT_INSERTED
        if self.busy:
            return BUSY
        if self.puk_left == 0:
            return BLOCKED
        if self.pin_left == 0:
            return SIM_PUK
        if self.locked and not self.verified:
            return SIM_PIN
        return READY

    @property
    def ready(self) -> bool:
        return self.state == READY

    def status_error(self) -> int | None:
        """The +CME ERROR a command needing the SIM gets now, None when the SIM is ready."""
        return {
            NOT_INSERTED: CME_NOT_INSERTED, SIM_PIN: CME_PIN_REQUIRED, SIM_PUK: CME_PUK_REQUIRED,
            BLOCKED: CME_SIM_FAILURE, BUSY: CME_SIM_BUSY,
        }.get(self.state)

    def enter(self, code: str, new_pin: str | None = None) -> int | None:
        """AT+CPIN=<pin>[,<new pin>]: None when accepted, else the +CME ERROR code."""
        self.cpin_writes += 1
        state = self.state
        if state in (NOT_INSERTED, BLOCKED, BUSY):
            return self.status_error()
        if state == READY:
            return CME_NOT_ALLOWED
        if state == SIM_PIN:
            if code == self.pin:
                self.pin_left, self.verified = PIN_TRIES, True
                return None
            self.cpin_wrong += 1
            self.pin_left -= 1
            return CME_INCORRECT_PASSWORD
        # SIM PUK: the PUK and a new PIN
        if new_pin is None:
            return CME_PUK_REQUIRED
        if code != self.puk or not (new_pin.isdigit() and 4 <= len(new_pin) <= 8):
            self.cpin_wrong += 1
            self.puk_left -= 1
            return CME_INCORRECT_PASSWORD
        self.pin, self.pin_left, self.puk_left, self.verified = new_pin, PIN_TRIES, PUK_TRIES, True
        return None

    def snapshot(self) -> dict:
        """For tests and the control socket (no PIN, no PUK)."""
        return {
            "state": self.state, "inserted": self.inserted, "locked": self.locked,
            "pin_left": self.pin_left, "puk_left": self.puk_left,
            "cpin_writes": self.cpin_writes, "cpin_wrong": self.cpin_wrong,
        }
