"""The named states of the module's life, in the manuals' vocabulary.

The supervisor is always in exactly one of these; `ModemLink.state` carries its value and
`ModemLink.status_text` a human line built from it (systemd STATUS=).

Bring-up follows the flowchart of the TCP/IP manuals (seeds-comparison §2.1):

    powering_on (PWRKEY low 2 s) -> waiting_ready (RDY / first answer, bounded)
    -> init (ATE0, CMEE, QISDE=0, profile QICFG settings, close stale sockets)
    -> sim (AT+CPIN? READY within 20 s) -> cs_registration (AT+CREG? 1|5 within 90 s, where the
    family has a CS step) -> ps_registration (AT+CGREG?/CEREG? 1|5, go on after 60 s either way)
    -> configuring (AT+QICSGP) -> activating (AT+QIACT, 150 s; AT+QIACT? for the address)
    -> serving

Registration lost while serving (URC or the radio task's periodic check): registration_lost, no
reboot (no manual asks for one); when it returns, AT+QIACT? decides: the context stayed up ->
serving with every socket kept, the network dropped it -> activating again.

Recovery: deactivating (AT+QIDEACT, 40 s), recovering (CFUN cycle), backoff (waiting for the next
permitted reboot), rebooting (the ladder), port_missing (the tty vanished, e.g. USB re-enumeration).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class State(str, Enum):
    STARTING = "starting"
    PORT_MISSING = "port_missing"
    POWERING_ON = "powering_on"
    WAITING_READY = "waiting_ready"
    INIT = "init"
    SIM = "sim"
    # the SIM cannot be used: bring-up stops here (no reboot) until the operator acts
    SIM_PIN_REQUIRED = "sim_pin_required"
    SIM_PIN_REJECTED = "sim_pin_rejected"
    SIM_PUK_REQUIRED = "sim_puk_required"
    SIM_NOT_INSERTED = "sim_not_inserted"
    CS_REGISTRATION = "cs_registration"
    PS_REGISTRATION = "ps_registration"
    CONFIGURING = "configuring"
    ACTIVATING = "activating"
    SERVING = "serving"
    REGISTRATION_LOST = "registration_lost"
    DEACTIVATING = "deactivating"
    RECOVERING = "recovering"
    BACKOFF = "backoff"
    REBOOTING = "rebooting"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


# States in which the module is expected to (re)boot: RDY / POWERED DOWN are not a surprise here.
BOOTING_STATES = frozenset({
    State.STARTING, State.PORT_MISSING, State.POWERING_ON, State.WAITING_READY, State.BACKOFF,
    State.REBOOTING,
})

# The SIM stop states: no reboot, no back-off; the status line is the message naming the fix.
SIM_STOP_STATES = frozenset({
    State.SIM_PIN_REQUIRED, State.SIM_PIN_REJECTED, State.SIM_PUK_REQUIRED, State.SIM_NOT_INSERTED,
})

# States after the SIM step that need the SIM: a +CPIN other than READY here means it was pulled
# or failed (RECOVERING is left out: AT+CFUN=0 takes the SIM down on purpose).
SIM_IN_USE_STATES = frozenset({
    State.CS_REGISTRATION, State.PS_REGISTRATION, State.CONFIGURING, State.ACTIVATING,
    State.SERVING, State.REGISTRATION_LOST, State.DEACTIVATING,
})

# States in which a command that misses its deadline means "the module is not answering": reboot.
TALKING_STATES = frozenset({
    State.INIT, State.SIM, *SIM_STOP_STATES, State.CS_REGISTRATION, State.PS_REGISTRATION,
    State.CONFIGURING, State.ACTIVATING, State.SERVING, State.REGISTRATION_LOST, State.DEACTIVATING,
    State.RECOVERING,
})

_STATUS = {
    State.STARTING: "starting",
    State.PORT_MISSING: "waiting for the serial port",
    State.POWERING_ON: "powering the module on",
    State.WAITING_READY: "waiting for the module to boot (RDY)",
    State.INIT: "initialising the module",
    State.SIM: "waiting for SIM",
    State.SIM_PIN_REQUIRED: "the SIM asks for its PIN",
    State.SIM_PIN_REJECTED: "the SIM rejected the PIN",
    State.SIM_PUK_REQUIRED: "the SIM asks for its PUK",
    State.SIM_NOT_INSERTED: "no SIM card",
    State.CS_REGISTRATION: "waiting for CS network registration",
    State.PS_REGISTRATION: "waiting for PS network registration",
    State.CONFIGURING: "configuring the PDP context",
    State.ACTIVATING: "activating the PDP context",
    State.SERVING: "serving",
    State.REGISTRATION_LOST: "network registration lost, waiting for it to return",
    State.DEACTIVATING: "deactivating the PDP context",
    State.RECOVERING: "recovering",
    State.BACKOFF: "waiting before the next reboot",
    State.REBOOTING: "rebooting the module",
    State.STOPPED: "stopped",
}


def status_text(state: State, detail: str = "") -> str:
    """One human line for systemd's STATUS= ("waiting for SIM (12 s left)"); in a SIM stop state
    the detail is the whole line (it names the fix)."""
    if state in SIM_STOP_STATES and detail:
        return detail
    text = _STATUS[state]
    return f"{text}, {detail}" if detail and state is State.SERVING else (
        f"{text} ({detail})" if detail else text
    )


# -- the flowchart's numbers and modemd's own budgets --------------------------------------------


@dataclass(frozen=True)
class Timings:
    """Deadlines and periods of the life cycle, in seconds (manual numbers marked "flowchart")."""

    boot_timeout: float = 30.0            # power-on / reset -> RDY or a first answer
    probe_timeout: float = 1.0            # one AT probe while waiting for the module
    probe_interval: float = 4.0           # between probes (RDY ends the wait at once)
    sim_timeout: float = 20.0             # flowchart: AT+CPIN? READY within 20 s, else reboot
    sim_poll: float = 1.0
    sim_absent_poll: float = 10.0         # SIM stop states: AT+CPIN? this often (a SIM may appear)
    cs_timeout: float = 90.0              # flowchart: CS registration within 90 s, else reboot
    ps_timeout: float = 60.0              # flowchart: go on after 60 s either way
    registration_poll: float = 2.0
    query_timeout: float = 5.0            # read commands (CPIN?, CREG?, QIACT?): "300 ms" class
    activation_failures: int = 3          # AT+QIACT answered ERROR this often in a row -> reboot
    activation_retry_delay: float = 10.0
    deactivation_failures: int = 3        # flowchart: failing to deactivate 3 times -> reboot
    deactivation_retry_delay: float = 1.0
    pdp_check_interval: float = 60.0      # AT+QIACT? while serving
    radio_poll: float | None = 30.0       # CSQ, QCSQ/QENG, COPS?, registration read-outs
                                          # (None: no polling; URCs are still followed)
    registration_lost_poll: float = 10.0  # the registration check while it is lost
    resync_attempts: int = 2              # ladder step 1: AT probes, each probe_timeout (the
                                          # channel's own probe series came first)
    powered_down_timeout: float = 15.0    # ladder step 2: POWERED DOWN after AT+QPOWD=1
    port_poll: float = 0.5                # first look for a missing tty, growing x1.5 ...
    port_poll_max: float = 5.0            # ... up to this period
    port_return_timeout: float = 60.0     # a tty missing this long with hardware control: reboot
    app_rdy_window: float = 30.0          # "APP RDY" this soon after "RDY" is the same boot
    watchdog_grace: float = 30.0          # a state may overrun its budget this much (healthy())


class RebootNeeded(Exception):
    """A flowchart rule says: reboot the module. `reason` is "<kind>: <details>"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Trouble:
    """Why the current phase of the module's life ended."""

    # "reboot" (a flowchart rule) | "reset" (the module rebooted by itself: RDY, an echo while ATE0
    # is in effect) | "silent" (the channel's probe series went unanswered: resync first) | "lost"
    # (a command of ours was lost, the module answered the probe: ask again) | "sim" (the SIM
    # went away while in use: sockets reset, bring-up again from the SIM step) | "port_lost"
    kind: str
    reason: str
