"""Typed helpers for the TCP/IP command set of the manuals, bound to a family profile.

Every builder validates what a user can influence (host names, APN, credentials) before it reaches a
command line, takes its deadline from the profile and parses the answer into a typed value. Two-phase
commands (QIOPEN, QIDNSGIP, QPING, QNTP) return after `OK`; the `*_and_wait` helpers also wait for the
URC that carries the result, subscribing before the command is written so the URC cannot be missed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..profiles import Profile
from ..validate import check_apn, check_credential, check_hostname
from .channel import AtChannel
from .protocol import ERROR_FINALS, OK_FINALS, SEND_FINALS, Command, Response
from .radio import (
    Operator,
    Quality,
    parse_cops,
    parse_csq,
    parse_qcsq,
    parse_qeng0,
    parse_qeng_servingcell,
)
from .urc import (
    DnsGipAddress,
    DnsGipHeader,
    NtpResult,
    OpenResult,
    PingReply,
    PingSummary,
    Registration,
    Urc,
    after_prefix,
    ip_text,
    parse_registration,
    split_fields,
    to_int,
)

SERVICE_TYPES = ("TCP", "UDP", "TCP LISTENER", "UDP SERVICE")
#: pdp.auth -> the <authentication> of AT+QICSGP (the one source: the config's choices come from here)
AUTH = {"none": 0, "pap": 1, "chap": 2, "pap_or_chap": 3}
#: pdp.ip_type -> the <context_type> of AT+QICSGP (the one source, like AUTH)
IP_TYPES = {"ipv4": 1, "ipv6": 2, "ipv4v6": 3}
#: pdp.ip_type -> the <PDP_type> of AT+CGDCONT (the families without AT+QICSGP)
PDP_TYPES = {"ipv4": "IP", "ipv6": "IPV6", "ipv4v6": "IPV4V6"}
# <finresult> codes of a failed ping on the families whose success code is 2 (U §2.10, BC Table 2)
PING_FINAL_RESULTS = {3: "tcpip_stack_busy", 4: "host_not_found", 5: "pdp_activation_failed"}
SEND_OK = frozenset({"SEND OK"})

# Commands the supervisor sends through its own helpers (supervisor/bringup.py: `setting` logs a
# refused start-up setting, `query` asks a read command lost on the line again): their text.
ECHO_OFF = "ATE0"
NUMERIC_ERRORS = "AT+CMEE=1"
QISDE_OFF = "AT+QISDE=0"
CS_REGISTRATION = "AT+CREG?"
#: the radio's functionality (its deadline's key in the profiles) and the module's power-down
CFUN = "AT+CFUN"
QPOWD = "AT+QPOWD=1"
#: (command, prefix of its answer lines) of the context read commands
QIACT_READ = ("AT+QIACT?", "+QIACT:")
CGACT_READ = ("AT+CGACT?", "+CGACT:")


# -- what an operator's command line (`modemctl at`) may not do ------------------------------------
_SOCKETS = "modemd owns the module's sockets"
#: extended commands refused in any form but test (=?) and read (?), and why
_REFUSED_ALWAYS = {
    "+QISEND": "data commands (QISEND/QIRD) would steal socket data",
    "+QISENDEX": "data commands (QISEND/QIRD) would steal socket data",
    "+QIRD": "data commands (QISEND/QIRD) would steal socket data",
    "+QIOPEN": f"{_SOCKETS}: open connections through a [[forward]] or SOCKS5",
    "+QICLOSE": f"{_SOCKETS}: a connection closes when its local client closes it",
    "+QISWTMD": f"{_SOCKETS}: it keeps every connection in direct push mode",
    "+QIACT": "modemd keeps the PDP contexts up: use `modemctl reconnect`",
    "+QIDEACT": "modemd keeps the PDP contexts up: use `modemctl reconnect`",
    "+CGACT": "modemd keeps the PDP contexts up: use `modemctl reconnect`",
    "+IPR": "the port's baud rate is [modem] baudrate: change it there, with the module's",
    "+IFC": "flow control is [modem] rtscts: change it there, with the module's",
    "+ICF": "the character framing is the port's: modemd would lose the line",
}
#: extended writes refused unless their value is the one modemd keeps
_KEPT_VALUES = {"+CMEE": "1", "+QISDE": "0"}
#: QICFG settings that change how received data is framed
_FRAMING = ('"VIEWMODE"', '"DATAFORMAT"', '"SHOWLENGTH"')
#: the first character of another maker's extended commands (AT$QCPWRDN, AT^SYSINFO, ...)
_VENDOR_PREFIXES = "$^#!%*"
#: basic commands (letter, or & and letter, then its number: none means 0) refused, and why;
#: the letter alone: refused with any number
_REFUSED_BASIC = {
    "E1": "echo would make modemd take every answer for a restarted module",
    "V0": "numeric result codes: modemd reads the verbose ones",
    "Q1": "result codes would be suppressed: every command would time out",
    "Z": "a settings reset takes modemd's settings away: use `modemctl reboot`",
    "&F": "a settings reset takes modemd's settings away: use `modemctl reboot`",
    "O": "data mode would take the line from modemd",
    "D": "dialling would take the line from modemd",
}


def _line_commands(text: str) -> list[str]:
    """The commands of one V.250 command line after its `AT`: extended ones (`+NAME...`, or
    another maker's prefix) up to their `;`, basic ones as letter (or `&` letter) plus digits;
    `S<n>=<v>` and a dial string (the rest of the line) are taken whole."""
    body, out, i = text[2:].upper(), [], 0
    while i < len(body):
        c = body[i]
        if c in " ;":
            i += 1
        elif c == "+" or c in _VENDOR_PREFIXES:  # extended
            end = body.find(";", i)
            end = len(body) if end < 0 else end
            out.append(body[i:end].strip())
            i = end
        elif c == "D":
            out.append("D")
            break
        else:
            j = i + (2 if c == "&" else 1)
            while j < len(body) and body[j].isdigit():
                j += 1
            if c == "S" and j < len(body) and body[j] in "=?":
                j += 1
                while j < len(body) and body[j] not in " ;" and not body[j].isalpha():
                    j += 1
            out.append(body[i:j])
            i = j
    return out


def operator_refusal(text: str) -> str | None:
    """Why modemd refuses `text` from an operator's `modemctl at` (None: it may go to the
    module): the commands that change how the port's answers read, or take the line, the
    sockets or the contexts from under the daemon. Test and read forms always pass."""
    for command in _line_commands(text):
        if command[0] in _VENDOR_PREFIXES or command[0] == "S":
            continue  # another maker's command, or an S-parameter (S3=13): none is refused
        if not command.startswith("+"):
            letter = command.rstrip("0123456789")
            number = int(command[len(letter):] or 0)
            why = _REFUSED_BASIC.get(letter) or _REFUSED_BASIC.get(f"{letter}{number}")
            if why:
                return f"AT{command}: {why}; not allowed"
            continue
        name, sep, rest = command.partition("=")
        if name.endswith("?") or rest.startswith("?"):
            continue  # read or test form
        if name in _REFUSED_ALWAYS:
            return f"AT{name}: {_REFUSED_ALWAYS[name]}; not allowed"
        if sep and name in _KEPT_VALUES and rest.strip() != _KEPT_VALUES[name]:
            return (f"AT{command}: modemd keeps AT{name}={_KEPT_VALUES[name]} (it reads "
                    "the module's answers that way); not allowed")
        values = rest.split(",")[1:]
        if sep and name == "+QICFG" and rest.startswith(_FRAMING) and set(values) - {"0"}:
            return (f"AT{command}: modemd reads received data in the default framing; "
                    "not allowed")
    return None


def cgpaddr_read(context_id: int) -> tuple[str, str]:
    """AT+CGPADDR for one context (families without AT+QIACT?: its addresses)."""
    return f"AT+CGPADDR={context_id}", "+CGPADDR:"


@dataclass(frozen=True)
class ContextState:
    context_id: int
    active: bool
    context_type: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class StoredContext:
    """A context's settings as AT+QICSGP=<contextID> reads them back (in the config's names; the
    password is left out: not every firmware need echo it)."""

    apn: str
    username: str
    auth: str
    ip_type: str


@dataclass(frozen=True)
class SocketState:
    connect_id: int
    service_type: str
    address: str
    remote_port: int
    local_port: int
    state: str
    context_id: int
    server_id: int | None
    access_mode: int


@dataclass(frozen=True)
class DnsServers:
    """The DNS servers a context (or, on BC25, the whole module: context_id None) resolves with."""

    context_id: int | None
    primary: str
    secondary: str


@dataclass(frozen=True)
class SendAck:
    total: int
    acked: int
    unacked: int


@dataclass(frozen=True)
class ReadResult:
    data: bytes
    remote: tuple[str, int] | None = None
    header: bool = True  # False: OK without its +QIRD line (garbled): what it carried is unknown


@dataclass(frozen=True)
class ReadTotals:
    total: int
    read: int
    unread: int


class OpenFailed(Exception):
    def __init__(self, connect_id: int, code: int | None, reason: str) -> None:
        super().__init__(f"connect_id {connect_id}: open failed: {reason}")
        self.connect_id, self.code, self.reason = connect_id, code, reason


class UrcTimeout(Exception):
    """The second phase of a two-phase command never came."""


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def ip_version(host: str) -> int | None:
    """4 or 6 for an IP literal, None for a name (the module resolves it)."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def context_state(f: list[str]) -> ContextState:
    """One `+QIACT: <id>,<state>,<type>[,<addr>[,<addr6>]]` line (RU prints both addresses of an
    IPv4v6 context, line-shapes D3); addresses in one spelling (`ip_text`)."""
    return ContextState(int(f[0]), f[1] == "1", int(f[2]), tuple(ip_text(x) for x in f[3:] if x))


def dns_servers(f: list[str]) -> DnsServers:
    """`+QIDNSCFG: <contextID>,<pri>,<sec>` (line-shapes D7), or BC25's `+QIDNSCFG: <pri>,<sec>`."""
    if len(f) >= 3 or (f and to_int(f[0]) is not None):
        return DnsServers(int(f[0]), ip_text(f[1]) if len(f) > 1 else "",
                          ip_text(f[2]) if len(f) > 2 else "")
    return DnsServers(None, ip_text(f[0]) if f else "", ip_text(f[1]) if len(f) > 1 else "")


def _dns_literal(address: str, key: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"{key}: {address!r} is not an IP address") from None


class QuectelAt:
    """The manuals' TCP/IP commands as typed async methods over one AtChannel."""

    def __init__(self, channel: AtChannel, profile: Profile) -> None:
        self.channel = channel
        self.profile = profile
        self._dns_lock = trio.Lock()
        self._ping_lock = trio.Lock()

    # -- plumbing -----------------------------------------------------------------------------
    def cmd(self, text: str, **kw) -> Command:
        name = text.split("=", 1)[0].split("?", 1)[0]
        kw.setdefault("timeout", self.profile.timeout(name))
        if "expect" not in kw:  # expected response time: past it, the channel probes (profile data)
            # the read and test forms (AT+QIACT?, AT+QIACT=?) are "300 ms" commands
            key = name + "?" if text.endswith("?") else name
            kw["expect"] = self.profile.expect(key, kw["timeout"])
        return Command(text, **kw)

    async def run(self, text: str, *, check: bool = True, **kw) -> Response:
        return await self.channel.command(self.cmd(text, **kw), check=check)

    async def query(self, text: str, prefix: str) -> list[list[str]]:
        """Run a command and return the fields of each `prefix` line."""
        resp = await self.run(text, prefix=prefix)
        return [split_fields(after_prefix(line)) for line in resp.lines]

    def _check_connect_id(self, connect_id: int) -> None:
        if connect_id not in self.profile.connect_ids:
            raise ValueError(f"connect_id {connect_id} outside {self.profile.connect_ids}")

    def _check_context_id(self, context_id: int) -> None:
        if context_id not in self.profile.context_ids:
            raise ValueError(f"context_id {context_id} outside {self.profile.context_ids}")

    # -- general ------------------------------------------------------------------------------
    async def at(self, timeout: float | None = None) -> None:
        await self.run("AT", **({"timeout": timeout} if timeout else {}))

    # -- the module's liveness (supervisor: health check, resync, silent reboot) ----------------
    async def probe(self, timeout: float) -> bool:
        """One `AT` ahead of the queue: True when the module answered (releases a queue held
        after a silence), False when it stayed silent for `timeout`."""
        return await self.channel.probe(timeout)

    @property
    def module_silent(self) -> bool:
        """The channel's probe series went unanswered (and no probe was answered since)."""
        return self.channel.silent

    async def wait_silent(self) -> None:
        """Until the channel declares the module silent."""
        await self.channel.silence.wait()

    def echo_disabled(self) -> None:
        """ATE0 was answered OK: an echo from now on means the module restarted unseen."""
        self.channel.echo_disabled()

    async def identify(self) -> dict[str, str]:
        """Model, firmware and IMEI, for the info metric and auto-detection."""
        model = await self.run("AT+CGMM", bare_lines=True)
        revision = await self.run("AT+CGMR", bare_lines=True, check=False)
        imei = await self.run("AT+CGSN", bare_lines=True, check=False)
        return {
            "model": " ".join(model.lines).strip(),
            "firmware": " ".join(revision.lines).replace("Revision:", "").strip(),
            "imei": " ".join(imei.lines).strip(),
        }

    async def ati(self) -> str:
        return "\n".join((await self.run("ATI", bare_lines=True)).lines)

    # -- the SIM (27.007 +CPIN; Quectel +QPINC, +QCCID) -------------------------------------------
    async def sim_state(self, timeout: float | None = None) -> str:
        """<code> of AT+CPIN? ("READY", "SIM PIN", "SIM PUK", ...); +CME ERROR raises."""
        kw = {"timeout": timeout} if timeout else {}
        resp = await self.run("AT+CPIN?", prefix="+CPIN:", **kw)
        rows = [split_fields(after_prefix(line)) for line in resp.lines]
        return rows[0][0] if rows and rows[0] else ""

    async def enter_pin(self, pin: str) -> None:
        """AT+CPIN="<pin>": the PIN the SIM asks for. The text is never logged: the channel
        logs command names only, and logs.redact masks every +CPIN= argument."""
        if not (4 <= len(pin) <= 8 and pin.isascii() and pin.isdigit()):
            raise ValueError("sim.pin: must be 4 to 8 digits")
        await self.run(f'AT+CPIN="{pin}"')

    async def pin_counters(self) -> tuple[int | None, int | None]:
        """(PIN attempts left, PUK attempts left) from AT+QPINC="SC"; (None, None) where the
        family has no AT+QPINC."""
        if not self.profile.has_qpinc:
            return None, None
        rows = await self.query('AT+QPINC="SC"', "+QPINC:")
        for row in rows:
            if len(row) >= 3 and row[0] == "SC":
                return to_int(row[1]), to_int(row[2])
        return None, None

    async def iccid(self) -> str:
        """The SIM's ICCID (AT+QCCID / AT+CCID; readable without the PIN)."""
        command = self.profile.iccid_command
        resp = await self.run(command, prefix=command[2:] + ":", bare_lines=True)
        text = " ".join(after_prefix(line) if ":" in line else line for line in resp.lines)
        return text.strip().strip('"')

    async def registration(self, command: str) -> int | None:
        """<stat> of AT+CREG? / AT+CGREG? / AT+CEREG? (1 home, 5 roaming)."""
        prefix = command[2:].split("?")[0] + ":"
        rows = await self.query(command, prefix)
        if not rows or len(rows[0]) < 2:
            return None
        return to_int(rows[0][1])

    async def csq(self) -> tuple[int, int]:
        rows = await self.query("AT+CSQ", "+CSQ:")
        return int(rows[0][0]), int(rows[0][1])

    async def csq_report(self) -> tuple[int | None, int | None]:
        """AT+CSQ as (rssi 0..31, ber 0..7), None where the module says 99 (unknown)."""
        resp = await self.run("AT+CSQ", prefix="+CSQ:")
        return parse_csq(resp.lines[0]) if resp.lines else (None, None)

    async def operator(self) -> Operator:
        """AT+COPS?: operator name (or MCC+MNC) and access technology."""
        resp = await self.run("AT+COPS?", prefix="+COPS:")
        return parse_cops(resp.lines[0]) if resp.lines else Operator()

    # -- radio (the radio task, modemctl status) -----------------------------------------------
    async def signal_quality(self) -> Quality | None:
        """The family's extended read-out (profile.signal_query), None where it has none."""
        kind = self.profile.signal_query
        if kind == "qcsq":
            resp = await self.run("AT+QCSQ", prefix="+QCSQ:")
            return parse_qcsq(resp.lines[0]) if resp.lines else Quality()
        if kind == "qeng_servingcell":
            resp = await self.run('AT+QENG="servingcell"', prefix="+QENG:")
            return parse_qeng_servingcell(resp.lines)
        if kind == "qeng0":
            resp = await self.run("AT+QENG=0", prefix="+QENG:")
            return parse_qeng0(resp.lines[0]) if resp.lines else Quality()
        return None

    async def registration_report(self, kind: str) -> Registration | None:
        """AT+<kind>? (CREG/CGREG/CEREG/C5GREG) as a typed read response."""
        resp = await self.run(f"AT+{kind}?", prefix=f"+{kind}:")
        # a URC printed just before the answer carries the same prefix: the read form is ours
        reads = [r for r in (parse_registration(x, response=True) for x in resp.lines)
                 if r.n is not None]
        return reads[-1] if reads else None

    def registration_urc_commands(self) -> tuple[str, ...]:
        """AT+CREG=2 etc. for each report the family has: URCs then carry lac/ci/AcT."""
        return tuple(f"AT+{kind}=2" for kind in self.profile.registration_kinds)

    async def cfun(self, level: int, reset: bool = False) -> None:
        await self.run(f"{CFUN}={level}{',1' if reset else ''}")

    async def qpowd(self) -> None:
        await self.run(QPOWD)

    # -- PDP context --------------------------------------------------------------------------
    async def qicsgp(
        self, context_id: int, apn: str, username: str = "", password: str = "",
        auth: str = "none", ip_type: str = "ipv4",
    ) -> None:
        self._check_context_id(context_id)
        apn = check_apn(apn)
        username = check_credential(username, "pdp.username")
        password = check_credential(password, "pdp.password")
        if len(username.encode()) > self.profile.max_credential:
            raise ValueError(f"pdp.username: longer than {self.profile.max_credential} bytes")
        if len(password.encode()) > self.profile.max_credential:
            raise ValueError(f"pdp.password: longer than {self.profile.max_credential} bytes")
        await self.run(
            f'AT+QICSGP={context_id},{IP_TYPES[ip_type]},"{apn}","{username}","{password}",'
            f"{AUTH[auth]}"
        )

    async def qicsgp_read(self, context_id: int) -> StoredContext | None:
        """What AT+QICSGP=<contextID> says the context is set up with (None: no answer line, or a
        type or authentication number modemd has no name for)."""
        self._check_context_id(context_id)
        rows = await self.query(f"AT+QICSGP={context_id}", "+QICSGP:")
        if not rows or len(rows[0]) < 5:
            return None
        ctype, apn, username, _password, auth = rows[0][:5]
        ip_type = {str(n): name for name, n in IP_TYPES.items()}.get(ctype)
        auth_name = {str(n): name for name, n in AUTH.items()}.get(auth)
        if ip_type is None or auth_name is None:
            return None
        return StoredContext(apn, username, auth_name, ip_type)

    async def cgdcont(self, context_id: int, apn: str, ip_type: str = "ipv4") -> None:
        """The APN and IP type of a context where there is no AT+QICSGP (BC25/BC32)."""
        self._check_context_id(context_id)
        await self.run(f'AT+CGDCONT={context_id},"{PDP_TYPES[ip_type]}","{check_apn(apn)}"')

    async def cgact(self, context_id: int, active: bool) -> None:
        """Activate or deactivate a context where there is no AT+QIACT (BC25/BC32)."""
        self._check_context_id(context_id)
        await self.run(f"AT+CGACT={int(active)},{context_id}")

    async def qiact(self, context_id: int) -> None:
        self._check_context_id(context_id)
        await self.run(f"AT+QIACT={context_id}")

    async def qideact(self, context_id: int) -> None:
        self._check_context_id(context_id)
        await self.run(f"AT+QIDEACT={context_id}")

    @property
    def activate_command(self) -> str:
        """The command that activates a context on this family (its deadline's key in the
        profile, and the name the supervisor's errors give)."""
        return "AT+QIACT" if self.profile.has_qiact else "AT+CGACT"

    @property
    def deactivate_command(self) -> str:
        return "AT+QIDEACT" if self.profile.has_qiact else "AT+CGACT"

    async def activate(self, context_id: int) -> None:
        """AT+QIACT, or AT+CGACT=1 where the family has no AT+QIACT (BC25/BC32)."""
        if self.profile.has_qiact:
            await self.qiact(context_id)
        else:
            await self.cgact(context_id, True)

    async def deactivate(self, context_id: int) -> None:
        """AT+QIDEACT, or AT+CGACT=0 where the family has no AT+QIDEACT (BC25/BC32)."""
        if self.profile.has_qiact:
            await self.qideact(context_id)
        else:
            await self.cgact(context_id, False)

    async def qiact_query(self) -> list[ContextState]:
        return [context_state(f) for f in await self.query(*QIACT_READ)]

    # -- DNS servers of a context (AT+QIDNSCFG) -------------------------------------------------
    async def qidnscfg(self, context_id: int, primary: str, secondary: str | None = None) -> None:
        """Set the DNS servers `context_id` resolves with (BC25: the module's one pair)."""
        self._check_context_id(context_id)
        args = f'"{_dns_literal(primary, "primary")}"'
        if secondary:
            args += f',"{_dns_literal(secondary, "secondary")}"'
        if self.profile.dnscfg_same_family and secondary and \
                ip_version(primary) != ip_version(secondary):
            raise ValueError(f"{self.profile.name}: both DNS servers must be IPv4 or both IPv6")
        if self.profile.dnscfg_context:
            await self.run(f"AT+QIDNSCFG={context_id},{args}")
        else:
            await self.run(f"AT+QIDNSCFG={args}")

    async def qidnscfg_query(self, context_id: int) -> DnsServers:
        self._check_context_id(context_id)
        text = f"AT+QIDNSCFG={context_id}" if self.profile.dnscfg_context else "AT+QIDNSCFG?"
        rows = await self.query(text, "+QIDNSCFG:")
        if not rows:
            raise ValueError(f"{text}: no +QIDNSCFG line")
        return dns_servers(rows[0])

    # -- addresses the family wants for the socket services --------------------------------------
    def listen_address(self, ipv6_context: bool) -> str:
        """The local address of a TCP LISTENER / UDP SERVICE (the IPv6 loopback on a context
        that has only IPv6, as the S5 examples write it)."""
        return self.profile.listen_address_ipv6 if ipv6_context else self.profile.listen_address

    @staticmethod
    def protocol_type(host: str, ipv6_context: bool) -> int:
        """BC25's <protocol_type> (0 IPv4, 1 IPv6): the remote literal's version, else (a name
        the module resolves, a listener) the context's."""
        version = ip_version(host)
        if version is None:
            return 1 if ipv6_context else 0
        return 1 if version == 6 else 0

    # -- sockets ------------------------------------------------------------------------------
    async def qiopen(
        self, context_id: int, connect_id: int, service_type: str, host: str, remote_port: int,
        local_port: int = 0, access_mode: int = 0, *, ipv6_context: bool = False,
    ) -> None:
        """Phase one: the module accepted the request (the result comes as +QIOPEN).
        `ipv6_context`: the context has only IPv6 (BC25's <protocol_type> for a name)."""
        self._check_context_id(context_id)
        self._check_connect_id(connect_id)
        if service_type not in SERVICE_TYPES:
            raise ValueError(f"service_type {service_type!r} not one of {SERVICE_TYPES}")
        if host not in (self.profile.listen_address, self.profile.listen_address_ipv6):
            host = check_hostname(host)  # the listen addresses keep the manuals' spelling
        if len(host.encode()) > self.profile.max_domain:
            raise ValueError(f"host name longer than {self.profile.max_domain} bytes")
        if not 0 <= remote_port <= 65535 or not 0 <= local_port <= 65535:
            raise ValueError("port out of range 0-65535")
        text = (
            f'AT+QIOPEN={context_id},{connect_id},"{service_type}","{host}",{remote_port},'
            f"{local_port},{access_mode}"
        )
        if self.profile.qiopen_protocol_type:
            text += f",{self.protocol_type(host, ipv6_context)}"
        await self.run(text)

    async def qiopen_and_wait(
        self, context_id: int, connect_id: int, service_type: str, host: str, remote_port: int,
        local_port: int = 0, access_mode: int = 0, timeout: float | None = None, *,
        ipv6_context: bool = False,
    ) -> None:
        """Open and wait for `+QIOPEN: <id>,0`; raise OpenFailed / UrcTimeout otherwise."""
        if timeout is None:
            timeout = self.profile.open_timeout(is_ip_literal(host))
        with self.channel.subscribe() as urcs:
            await self.qiopen(
                context_id, connect_id, service_type, host, remote_port, local_port, access_mode,
                ipv6_context=ipv6_context,
            )
            with trio.move_on_after(timeout):
                async for urc in urcs:
                    if isinstance(urc, OpenResult) and urc.connect_id == connect_id:
                        if urc.result != 0:
                            name = self.profile.error_name(urc.result)
                            raise OpenFailed(connect_id, urc.result, f"{urc.result} {name}")
                        return
            raise UrcTimeout(f"no +QIOPEN for connect_id {connect_id} within {timeout:g} s")

    async def qiclose(self, connect_id: int, timeout: float | None = None) -> None:
        self._check_connect_id(connect_id)
        deadline = timeout if timeout is not None else self.profile.timeout("AT+QICLOSE")
        if self.profile.qiclose_has_timeout:
            text = f"AT+QICLOSE={connect_id},{max(1, int(deadline) - 2)}"
        else:
            text = f"AT+QICLOSE={connect_id}"
        after = frozenset({"CLOSE OK"}) if self.profile.two_stage_close else None
        await self.run(text, after_ok=after, timeout=deadline)

    async def qistate(self, context_ids: tuple[int, ...] = ()) -> list[SocketState]:
        if self.profile.qistate_by_context:
            rows = []
            for ctx in context_ids or (1,):
                rows += await self.query(f"AT+QISTATE=0,{ctx}", "+QISTATE:")
        else:
            rows = await self.query("AT+QISTATE?", "+QISTATE:")
        return [self._socket_state(f) for f in rows if len(f) >= self.profile.qistate_fields]

    def _socket_state(self, f: list[str]) -> SocketState:
        state = self.profile.socket_states.get(int(f[5]), f[5])
        if self.profile.qistate_fields == 10:
            server_id, mode = to_int(f[7]), int(f[8])
        else:
            server_id, mode = None, int(f[7])
        return SocketState(
            int(f[0]), f[1], ip_text(f[2]), int(f[3]), int(f[4]), state, int(f[6]), server_id, mode
        )

    def send_command(self, connect_id: int, data: bytes, remote: tuple[str, int] | None = None):
        """The fixed-length QISEND for `data` (binary-safe: never the Ctrl+Z form)."""
        self._check_connect_id(connect_id)
        if not 0 < len(data) <= self.profile.max_send:
            raise ValueError(f"QISEND length {len(data)} outside 1-{self.profile.max_send}")
        text = f"AT+QISEND={connect_id},{len(data)}"
        if remote is not None:
            ip = str(ipaddress.ip_address(remote[0]))
            text += f',"{ip}",{int(remote[1])}'
        if self.profile.two_stage_send:
            return self.cmd(text, data=data, finals=OK_FINALS, after_ok=SEND_FINALS)
        return self.cmd(text, data=data, finals=SEND_FINALS)

    # -- the socket layer's view of the channel (sockets/ never touches the channel itself) ----
    def set_push(self, connect_id: int, on: bool) -> None:
        """Frame this connect_id's "recv" URCs as direct push (a payload follows) or not."""
        self.channel.set_push(connect_id, on)

    def subscribe_sockets(
        self, buffer: int, push: Callable[[int, bytes], None], push_corrupt: Callable[[int], None],
        push_done: Callable[[], None],
    ) -> trio.MemoryReceiveChannel[Urc]:
        """Every URC from now on; pushed data (and the connect_id of a broken push frame) go to
        `push` / `push_corrupt` synchronously from the reader instead, and `push_done` is called
        once the events of each read are dispatched (hand over what it pushed now)."""
        urcs = self.channel.subscribe(buffer)
        self.channel.push_sink = push
        self.channel.push_corrupt_sink = push_corrupt
        self.channel.push_done = push_done
        return urcs

    def submit_send(
        self, connect_id: int, data: bytes, remote: tuple[str, int] | None = None
    ) -> object:
        """Queue one QISEND without waiting for it (see `wait_send`)."""
        return self.channel.submit(self.send_command(connect_id, data, remote))

    def submit_stream(
        self, connect_id: int, first: bytes, next_chunk: Callable[[bool], bytes | None]
    ) -> object:
        """Queue a chain of stream QISENDs (channel.submit's `follow`): `first`, then, at each
        SEND OK, the chunk `next_chunk(queued)` returns, written by the reader at once, or
        behind the other commands when some wait (`queued`). It is called only when the chunk
        in flight got SEND OK, so exactly the chunks it was called for are sent. The request
        ends at the first other outcome (SEND FAIL, ERROR, lost) or when `next_chunk` returns
        None: `wait_send` gives that last command's outcome."""

        def follow(response: Response, queued: bool) -> Command | None:
            chunk = next_chunk(queued)
            return None if chunk is None else self.send_command(connect_id, chunk)

        return self.channel.submit(self.send_command(connect_id, first), follow=follow,
                                   follow_ok=SEND_OK)  # type: ignore[arg-type]

    async def wait_send(self, request: object) -> Response:
        """The response of a submit_send or submit_stream (ERROR is returned, not raised;
        CommandLost, AtTimeout and ChannelClosed are raised)."""
        return await self.channel.wait(request, check=False)  # type: ignore[arg-type]

    async def qisend(
        self, connect_id: int, data: bytes, remote: tuple[str, int] | None = None
    ) -> bool:
        """True on SEND OK; False on SEND FAIL (the module's send buffer is full: retry later)."""
        resp = await self.channel.command(self.send_command(connect_id, data, remote))
        return resp.final == "SEND OK"

    async def qisend_ack(self, connect_id: int) -> SendAck:
        if not self.profile.has_ack_query:
            raise NotImplementedError(f"{self.profile.name} has no AT+QISEND=<id>,0")
        self._check_connect_id(connect_id)
        f = (await self.query(f"AT+QISEND={connect_id},0", "+QISEND:"))[0]
        return SendAck(int(f[0]), int(f[1]), int(f[2]))

    async def qird(self, connect_id: int, length: int | None = None) -> ReadResult:
        """One read; b'' when the module buffer is empty (`+QIRD: 0`)."""
        self._check_connect_id(connect_id)
        if length is None and self.profile.read_length_required:
            length = self.profile.max_read
        if length is not None:
            length = min(length, self.profile.max_read)
            text = f"AT+QIRD={connect_id},{length}"
        else:
            text = f"AT+QIRD={connect_id}"
        resp = await self.run(text, prefix="+QIRD:", payload=True)
        if not resp.lines:  # an empty buffer answers `+QIRD: 0`: its header was garbled
            return ReadResult(b"", header=False)
        f = split_fields(resp.fields(0))
        remote = (ip_text(f[1]), int(f[2])) if len(f) >= 3 and not f[1].isdigit() else None
        return ReadResult(resp.payload or b"", remote)

    async def qird_totals(self, connect_id: int) -> ReadTotals:
        if not self.profile.has_read_totals:
            raise NotImplementedError(f"{self.profile.name} has no AT+QIRD=<id>,0")
        self._check_connect_id(connect_id)
        f = (await self.query(f"AT+QIRD={connect_id},0", "+QIRD:"))[0]
        return ReadTotals(int(f[0]), int(f[1]), int(f[2]))

    async def qiswtmd(self, connect_id: int, access_mode: int) -> None:
        self._check_connect_id(connect_id)
        await self.run(f"AT+QISWTMD={connect_id},{access_mode}")

    # -- utilities ----------------------------------------------------------------------------
    async def qidnsgip(self, context_id: int, host: str) -> list[str]:
        """Resolve through the module's DNS; raises OpenFailed-like errors as LookupError."""
        if not self.profile.has_qidnsgip:
            raise NotImplementedError(f"{self.profile.name} has no AT+QIDNSGIP")
        host = check_hostname(host)
        async with self._dns_lock:
            with self.channel.subscribe() as urcs:
                await self.run(f'AT+QIDNSGIP={context_id},"{host}"')
                return await self._collect_dns(urcs)

    async def _collect_dns(self, urcs) -> list[str]:
        addresses: list[str] = []
        expected: int | None = None
        with trio.move_on_after(self.profile.urc_timeouts["dns"]):
            async for urc in urcs:
                if isinstance(urc, DnsGipHeader):
                    if urc.result != 0:
                        name = self.profile.error_name(urc.result)
                        raise LookupError(f"DNS lookup failed: {urc.result} {name}")
                    expected = urc.count
                elif isinstance(urc, DnsGipAddress):
                    addresses.append(urc.address)
                if expected is not None and len(addresses) >= expected:
                    return addresses
        raise UrcTimeout("no complete +QIURC: \"dnsgip\" answer")

    async def qping(
        self, context_id: int, host: str, timeout: int = 4, count: int = 4
    ) -> tuple[list[PingReply], PingSummary | None]:
        """The replies and the final statistics; LookupError when the ping itself failed.

        A one-field `+QPING: <code>` is either a request that timed out (the family's per-reply
        timeout code, while requests are outstanding) or the final result of a failed ping. The
        final line counts as success only with the family's code (0; 2 on U and BC, §5.2).
        """
        host = check_hostname(host)
        replies: list[PingReply] = []
        answered = 0
        profile = self.profile
        async with self._ping_lock:
            with self.channel.subscribe() as urcs:
                await self.run(f'AT+QPING={context_id},"{host}",{timeout},{count}')
                with trio.move_on_after(profile.urc_timeouts["ping"]):
                    async for urc in urcs:
                        if isinstance(urc, PingSummary):
                            if urc.result != profile.ping_success:
                                raise LookupError(f"ping failed: {self._ping_result(urc.result)}")
                            return replies, urc
                        if not isinstance(urc, PingReply):
                            continue
                        if urc.address:
                            answered += 1
                            replies.append(urc)
                        elif urc.result == profile.ping_timeout_result and answered < count:
                            answered += 1  # this request timed out; the summary follows
                        else:
                            raise LookupError(f"ping failed: {self._ping_result(urc.result)}")
        return replies, None

    def _ping_result(self, code: int) -> str:
        if self.profile.ping_success == 2 and code in PING_FINAL_RESULTS:  # U §2.10, BC Table 2
            return f"{code} {PING_FINAL_RESULTS[code]}"
        return f"{code} {self.profile.error_name(code)}"

    async def qntp(self, context_id: int, server: str, port: int = 123) -> NtpResult:
        command = self.profile.ntp_command
        if command is None:
            raise NotImplementedError(f"{self.profile.name} has no NTP command")
        server = check_hostname(server)
        with self.channel.subscribe() as urcs:
            await self.run(f'{command}={context_id},"{server}",{port}')
            with trio.move_on_after(self.profile.urc_timeouts["ntp"]):
                async for urc in urcs:
                    if isinstance(urc, NtpResult):
                        return urc
        raise UrcTimeout("no NTP result")

    async def qicfg(self, name: str, *values: int | str) -> list[str]:
        args = "".join(f",{v}" if isinstance(v, int) else f',"{v}"' for v in values)
        rows = await self.query(f'AT+QICFG="{name}"{args}', "+QICFG:")
        return rows[0][1:] if rows else []

    def keepalive_command(self, idle_seconds: float) -> str | None:
        """The command that sets the TCP keepalive of the module's sockets after `idle_seconds`
        of silence (0: off), in the family's command and unit; None when the family has none."""
        p = self.profile
        if p.keepalive is None:
            return None
        if idle_seconds <= 0:
            args = "0"
        else:
            args = f"1,{p.keepalive_idle(idle_seconds)},{p.keepalive_interval},{p.keepalive_probes}"
        if p.keepalive == "qikalive":
            return f"AT+QIKALIVE={args}"
        return f'AT+QICFG="tcp/keepalive",{args}'

    async def qisde(self, echo: bool) -> None:
        await self.run(f"AT+QISDE={1 if echo else 0}")

    async def qigeterror(self) -> tuple[int, str]:
        f = (await self.query("AT+QIGETERROR", "+QIGETERROR:"))[0]
        return int(f[0]), f[1] if len(f) > 1 else ""


__all__ = [
    "ERROR_FINALS", "ContextState", "DnsServers", "OpenFailed", "QuectelAt", "ReadResult", "ReadTotals",
    "SendAck", "SocketState", "UrcTimeout", "context_state", "dns_servers", "ip_version",
    "is_ip_literal",
]
