"""The Profile record: everything that differs between module families, as data.

Code asks the profile ("does this family have QIDNSGIP?", "how long may QIACT take?") instead of
branching on a model name. Section references are to ../shared/docs/seeds-comparison.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Canonical names for the TCP/IP result codes (seeds-comparison §5.1). Families map numbers to these.
STANDARD_ERRORS: Mapping[int, str] = MappingProxyType({
    0: "ok",
    550: "unknown_error",
    551: "operation_blocked",
    552: "invalid_parameters",
    553: "memory_not_enough",
    554: "create_socket_failed",
    555: "operation_not_supported",
    556: "socket_bind_failed",
    557: "socket_listen_failed",
    558: "socket_write_failed",
    559: "socket_read_failed",
    560: "socket_accept_failed",
    561: "pdp_activate_failed",
    562: "pdp_deactivate_failed",
    563: "socket_id_used",
    564: "dns_busy",
    565: "dns_failed",
    566: "socket_connect_failed",
    567: "socket_closed",
    568: "operation_busy",
    569: "operation_timeout",
    570: "pdp_broken",
    571: "send_cancelled",
    572: "operation_not_allowed",
    573: "apn_not_configured",
    574: "port_busy",
})

# Default deadlines (seconds) by command name, from seeds-comparison §2.3. "300 ms" class commands get
# 5 s: a loaded module is slow, and the flowchart's only hard rule for them is "60 s, then reboot".
BASE_TIMEOUTS: Mapping[str, float] = MappingProxyType({
    "AT+QIACT": 150.0,
    "AT+QIACTEX": 150.0,
    "AT+QIDEACT": 40.0,
    "AT+QIDEACTEX": 40.0,
    "AT+QIOPEN": 150.0,
    "AT+QICLOSE": 10.0,
    "AT+QISEND": 120.0,
    "AT+QIRD": 120.0,
    "AT+QISENDEX": 120.0,
    "AT+QPING": 300.0,
    "AT+QNTP": 125.0,
    "AT+QIDNSGIP": 60.0,
    "AT+QICSGP": 5.0,
    "AT+QISTATE": 5.0,
    "AT+QISWTMD": 5.0,
    "AT+QIDNSCFG": 5.0,
    "AT+QICFG": 5.0,
    "AT+QISDE": 5.0,
    "AT+QIGETERROR": 5.0,
    "AT": 5.0,
    "AT+CFUN": 15.0,
    "AT+CPIN": 5.0,       # 27.007 +CPIN write: the SIM checks the code (manuals: 5 s)
    "AT+QPOWD": 60.0,
    "AT+COPS": 180.0,
})

# Expected response times (seconds), by command name: after this long without a final result the AT
# channel suspects the command or its answer was lost on the line (noise, a USB hiccup, an overrun
# that ate a CR). It waits for a quiet line, then probes with `AT`: answered, the command is lost
# (CommandLost, the module is alive and is not rebooted); unanswered, the module is silent. The value
# is capped by the command's own deadline (`timeout`); read and test forms (AT+QIACT?) are FAST.
# Four classes (seeds-comparison §2.3):
#
# FAST     the manuals' "300 ms" commands (QICSGP, QISTATE, QISWTMD, QIDNSCFG, QICFG, QISDE,
#          QIGETERROR; AT, ATE0, CMEE, CPIN?, CREG?/CGREG?/CEREG?, CSQ, CGMM... "300 ms" in every
#          manual that gives a time): five times that, because a loaded module answers late.
# DATA     QISEND / QISENDEX / QIRD: BG96/S5 give 120 s, but their answers come from the module's
#          own buffers (`>` at once, SEND OK once the bytes are in the send buffer, SEND FAIL at once
#          when it is full, +QIRD from the receive buffer); BC25 gives 300 ms for all three (§2.3 table,
#          rows QISEND/QIRD/QISENDEX). A lost one must cost seconds, not minutes (issue 13: the longest
#          delivery gap with two lost commands is at most 3 s: 1 s, a quiet line, one probe). The
#          clock restarts when the `>` is seen, after the payload's wire time, and a payload still
#          arriving (QIRD) keeps the line busy, so a slow line is not a lost one.
# DEADLINE the network-bound commands keep the manual's maximum response time as the expectation:
#          QICLOSE (§2.3: `<timeout>`, default 10 s), QPING (300 s), QNTP (125 s), QIDNSGIP (60 s),
#          COPS (180 s), CFUN (15 s). Past it, the same probe decides (the manuals' §1.1 note 1 says
#          60 s without an answer is a reason to reboot: only a silent module is rebooted).
# None     the commands whose deadline is a flowchart rule keep it (seeds-comparison §2.1/§2.2):
#          QIACT / QIACTEX 150 s and QIDEACT / QIDEACTEX 40 s (3 failures: reboot) are decided by
#          the supervisor's PDP keeper, QIOPEN 150 s ("no response in 150 s: close the connection")
#          by the socket layer, QPOWD by the reboot ladder (it waits for POWERED DOWN). No probe.
FAST = 1.5
DATA = 1.0
DEADLINE = math.inf

BASE_EXPECT: Mapping[str, float | None] = MappingProxyType({
    "AT+QIACT": None,
    "AT+QIACTEX": None,
    "AT+QIDEACT": None,
    "AT+QIDEACTEX": None,
    "AT+QIOPEN": None,
    "AT+CGACT": None,
    "AT+QPOWD": None,
    "AT+QICLOSE": DEADLINE,
    "AT+QPING": DEADLINE,
    "AT+QNTP": DEADLINE,
    "AT+QIDNSGIP": DEADLINE,
    "AT+COPS": DEADLINE,
    "AT+CFUN": DEADLINE,
    "AT+CPIN": DEADLINE,  # a PIN write is never asked again within the power-on: no early probe
    "AT+QISEND": DATA,
    "AT+QISENDEX": DATA,
    "AT+QIRD": DATA,
})

# URC waits (phase two of two-phase commands).
BASE_URC_TIMEOUTS: Mapping[str, float] = MappingProxyType({
    "open": 150.0,  # +QIOPEN (flowchart: 150 s, then QICLOSE)
    "dns": 60.0,
    "ping": 300.0,
    "ntp": 125.0,
    "actex": 150.0,
})

ALL_SOCKET_STATES: Mapping[int, str] = MappingProxyType(
    {0: "initial", 1: "opening", 2: "connected", 3: "listening", 4: "closing"}
)


@dataclass(frozen=True, eq=False)
class Profile:
    """One module family, as its manual describes it."""

    name: str                     # profile name used in config, tests and docs
    manual: str                   # which seed manual it comes from
    title: str
    models: tuple[str, ...]       # substrings of AT+CGMM / ATI output that select this profile
    # PDP contexts (seeds-comparison §3.1-§3.3, trap 36): the <contextID> range every command takes
    # and how many may be active at once (the module refuses one more activation)
    context_ids: range = range(1, 17)
    connect_ids: range = range(0, 12)
    max_send: int = 1460          # AT+QISEND=<id>,<len> maximum
    max_read: int = 1500          # AT+QIRD=<id>,<len> maximum
    max_domain: int = 256         # bytes of a domain name in QIOPEN/QIDNSGIP
    max_credential: int = 127     # bytes of QICSGP username / password
    max_active_contexts: int = 3
    # capabilities
    has_qicsgp: bool = True
    has_qiact: bool = True        # False: the context is activated with AT+CGACT (BC25/BC32)
    has_qiactex: bool = False     # RGx00U asynchronous activation
    has_ack_query: bool = True    # AT+QISEND=<id>,0
    has_read_totals: bool = True  # AT+QIRD=<id>,0
    has_qisde: bool = True
    qisde_default: int | None = None
    has_qidnsgip: bool = True
    has_qisendex: bool = True
    has_transparent: bool = True
    has_pdpdeact_urc: bool = True
    direct_push: bool = True      # access mode 1 and AT+QISWTMD: TCP data pushed as it arrives
    ntp_command: str | None = "AT+QNTP"
    # IPv6 (seeds-comparison §3.1 <context_type>, traps 39-42): the PDP types a context may have
    ip_types: tuple[str, ...] = ("ipv4", "ipv6", "ipv4v6")
    tcp_listener: bool = True
    tcp_listener_ipv6: bool = True
    udp_service: bool = True
    # local address of a TCP LISTENER / UDP SERVICE: "127.0.0.1" by every manual's parameter text;
    # on an IPv6-only context the S5 examples write the IPv6 loopback (S5 §3.7.1, §3.9.1)
    listen_address: str = "127.0.0.1"
    listen_address_ipv6: str = "0:0:0:0:0:0:0:1"
    # BC25/BC32: QIOPEN's 8th parameter <protocol_type> (0 IPv4, 1 IPv6; BC §2.1.1): the module
    # does not infer the IP version from the context, it must be told
    qiopen_protocol_type: bool = False
    # AT+QIDNSCFG: per context `=<contextID>[,<pri>[,<sec>]]` (S5 §2.3.13, U §2.12, 96 §2.1.13,
    # RU §2.3.14), or one pair for the module `=<pri>[,<sec>]` / `?` (BC §2.1.14)
    dnscfg_context: bool = True
    # RU §2.3.14 notes: "Only IPv4 DNS address can be set in IPv4. Only IPv6 DNS ... in IPv6."
    dnscfg_same_family: bool = False
    qiclose_has_timeout: bool = True
    two_stage_send: bool = False  # OK, then SEND OK / SEND FAIL
    two_stage_close: bool = False  # OK, then CLOSE OK
    read_length_required: bool = False
    qistate_fields: int = 10
    qistate_by_context: bool = False  # no AT+QISTATE? read form: query AT+QISTATE=0,<ctx>
    socket_states: Mapping[int, str] = field(default_factory=lambda: ALL_SOCKET_STATES)
    errors: Mapping[int, str] = field(default_factory=lambda: STANDARD_ERRORS)
    ping_success: int = 0         # <finresult> of a ping that finished normally
    ping_timeout_result: int = 569  # per-reply <result> of a request that timed out
    # TCP keepalive of every module socket (seeds-comparison §3.15, §3.18, trap 30): "qicfg"
    # AT+QICFG="tcp/keepalive" (BG95: idle in minutes 1-120; RGx00U: seconds 1-1800), "qikalive"
    # AT+QIKALIVE (BC25: seconds 1-36000), None: the family has neither (BG96, UC/EC2x class)
    keepalive: str | None = "qicfg"
    keepalive_idle_unit: float = 60.0             # seconds per unit of <idle_time>
    keepalive_idle_range: tuple[int, int] = (1, 120)
    keepalive_interval: int = 25                  # s between probes (25-100; BC25 10-20)
    keepalive_probes: int = 3                     # unanswered probes before the socket closes
    # flowchart steps
    cs_registration: bool = False  # AT+CREG? within 90 s
    ps_registration: tuple[str, ...] = ("AT+CGREG?", "AT+CEREG?")
    sim_status_commands: tuple[str, ...] = ("AT+CPIN?",)
    has_qpinc: bool = True        # AT+QPINC: PIN / PUK attempts left (not in the BC25 set)
    iccid_command: str = "AT+QCCID"
    # radio: the registration reports the family has (+CREG/+CGREG/+CEREG/+C5GREG; the PS ones
    # decide "registered"), and its extended signal read-out: "qcsq" (AT+QCSQ), "qeng_servingcell"
    # (AT+QENG="servingcell"), "qeng0" (AT+QENG=0), None (AT+CSQ only)
    registration_kinds: tuple[str, ...] = ("CREG", "CGREG", "CEREG")
    signal_query: str | None = None
    # start-up settings that must be (re)applied every time (NVRAM-persisted defaults, echo ...)
    init_commands: tuple[str, ...] = ()
    server_init_commands: tuple[str, ...] = ()  # only when a module-side listener is configured
    timeouts: Mapping[str, float] = field(default_factory=lambda: BASE_TIMEOUTS)
    urc_timeouts: Mapping[str, float] = field(default_factory=lambda: BASE_URC_TIMEOUTS)
    expects: Mapping[str, float | None] = field(default_factory=lambda: BASE_EXPECT)
    open_urc_timeout_ip: float | None = None      # BC25: 36 s for an IP literal
    open_urc_timeout_domain: float | None = None  # BC25: 176 s for a domain name

    def keepalive_idle(self, seconds: float) -> int:
        """<idle_time> in the family's unit for `seconds` (rounded up, clamped to its range)."""
        lo, hi = self.keepalive_idle_range
        return max(lo, min(hi, math.ceil(seconds / self.keepalive_idle_unit)))

    def timeout(self, command_name: str) -> float:
        return self.timeouts.get(command_name, 60.0)

    def expect(self, command_name: str, timeout: float) -> float | None:
        """Expected response time of `command_name` with deadline `timeout` (None: no probe,
        the deadline is a flowchart rule); commands not listed are in the "300 ms" class."""
        value = self.expects.get(command_name, FAST)
        return None if value is None else min(value, timeout)

    def error_name(self, code: int) -> str:
        return self.errors.get(code, f"error_{code}")

    def error_code(self, name: str) -> int | None:
        """The family's number for a canonical error name (the tables differ per family)."""
        for code, n in self.errors.items():
            if n == name:
                return code
        return None

    def open_timeout(self, host_is_literal: bool) -> float:
        if host_is_literal and self.open_urc_timeout_ip:
            return self.open_urc_timeout_ip
        if not host_is_literal and self.open_urc_timeout_domain:
            return self.open_urc_timeout_domain
        return self.urc_timeouts["open"]
