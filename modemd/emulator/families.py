"""The emulator's own per-family table (independent of `modemd.profiles` on purpose).

Sources: the five manuals in /work/shared/seeds and the digest docs/seeds-comparison.md (§3, §4, §5, §7).
Everything a family does differently is data here; the few behaviours that cannot be data are small
handler overrides in `handlers.py` (looked up by `Family.name`).

Values marked [inference] are not in the manual of that family.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Internal socket states (mapped to each family's numbers by Family.state_codes).
OPENING = "opening"
CONNECTED = "connected"
LISTENING = "listening"
CLOSING = "closing"

# --------------------------------------------------------------------------------------------
# error tables (code -> description as printed by AT+QIGETERROR)

_BG96_ERRORS = {
    0: "Operation successful",
    550: "Unknown error",
    551: "Operation blocked",
    552: "Invalid parameters",
    553: "Memory not enough",
    554: "Create socket failed",
    555: "Operation not supported",
    556: "Socket bind failed",
    557: "Socket listen failed",
    558: "Socket write failed",
    559: "Socket read failed",
    560: "Socket accept failed",
    561: "Open PDP context failed",
    562: "Close PDP context failed",
    563: "Socket identity has been used",
    564: "DNS busy",
    565: "DNS parse failed",
    566: "Socket connect failed",
    567: "Socket has been closed",
    568: "Operation busy",
    569: "Operation timeout",
    570: "PDP context broken down",
    571: "Cancel send",
    572: "Operation not allowed",
    573: "APN not configured",
    574: "Port busy",
}

# Semantic error names -> codes (BG96 / BC25 / RG500U numbering).
_BG96_ERR = {
    "ok": 0,
    "unknown": 550,
    "blocked": 551,
    "invalid_param": 552,
    "no_memory": 553,
    "create_socket": 554,
    "not_supported": 555,
    "bind": 556,
    "listen": 557,
    "write": 558,
    "read": 559,
    "accept": 560,
    "pdp_open": 561,
    "pdp_close": 562,
    "socket_id_used": 563,
    "dns_busy": 564,
    "dns_failed": 565,
    "connect_failed": 566,
    "socket_closed": 567,
    "busy": 568,
    "timeout": 569,
    "pdp_broken": 570,
    "cancel_send": 571,
    "not_allowed": 572,
    "apn_not_configured": 573,
    "port_busy": 574,
    # no code for "already active" in this table [inference]
    "pdp_already_active": 572,
}

_BG95_ERRORS = {
    0: "operate successfully",
    550: "unknown error",
    551: "operation blocked",
    552: "invalid parameters",
    553: "memory allocation failed",
    554: "create socket failed",
    555: "operation not supported",
    556: "socket bind failed",
    557: "socket listen failed",
    558: "socket write failed",
    559: "socket read failed",
    560: "socket accept failed",
    561: "activate pdp context failed",
    562: "deactivate pdp context failed",
    563: "socket identity has been used",
    564: "dns busy",
    565: "dns failed",
    566: "socket connect failed",
    567: "connection reset",
    568: "operation busy",
    569: "operation timeout",
    570: "pdp context deactivated",
    571: "user cancel send",
    572: "operation not allowed",
    573: "port busy",
    574: "pdp has been actived",
}
_BG95_ERR = dict(_BG96_ERR, apn_not_configured=550, port_busy=573, pdp_already_active=574)

# The unnamed "generic" manual (001) numbers everything differently (digest §5.1).
_GENERIC_ERRORS = {
    0: "Operate successfully",
    552: "Unknown error",
    553: "Operation blocked",
    554: "Open connection failed",
    555: "Connection has been closed",
    556: "Active PDP failed",
    557: "Invalid IP address",
    558: "Invalid parameters",
    559: "Operation not supported",
    560: "Create socket failed",
    561: "Invalid socket ID",
    562: "Specified socket index has been used",
    563: "PDP has already been activated",
    564: "Invalid APP type",
    565: "DNS parse failed",
    566: "Invalid operation",
    567: "Socket listen failed",
    568: "Bind socket failed",
    569: "Memory not enough",
    570: "Socket index unused",
    571: "Operation timeout",
    572: "No NTP response returns",
    573: "PDP is activating",
    574: "DNS parse busy",
}
_GENERIC_ERR = {
    "ok": 0,
    "unknown": 552,
    "blocked": 553,
    "invalid_param": 558,
    "no_memory": 569,
    "create_socket": 560,
    "not_supported": 559,
    "bind": 568,
    "listen": 567,
    "write": 554,
    "read": 554,
    "accept": 554,
    "pdp_open": 556,
    "pdp_close": 556,
    "socket_id_used": 562,
    "dns_busy": 574,
    "dns_failed": 565,
    "connect_failed": 554,
    "socket_closed": 555,
    "busy": 553,
    "timeout": 571,
    "pdp_broken": 556,
    "cancel_send": 566,
    "not_allowed": 566,
    "apn_not_configured": 556,
    "port_busy": 568,
    "pdp_already_active": 563,
}

_RG500U_ERRORS = {
    **_BG96_ERRORS,
    0: "Operation success",
    554: "Socket creation failed",
    561: "PDP context opening failed",
    562: "PDP context closure failed",
    571: "PDP context broken down",  # sic (digest A26: meaning "Cancel sending")
}

# --------------------------------------------------------------------------------------------
# AT+QICFG options: name -> tuple of field specs; a field spec is (lo, hi) for integers, a tuple of
# allowed integers, or "str".


@dataclass(frozen=True)
class QicfgOption:
    fields: tuple  # per value: (lo, hi) | tuple[int, ...] (allowed set) | "str"
    default: tuple
    min_fields: int | None = None  # values needed for a set (default: all)


def _opt(fields, default, min_fields=None):
    return QicfgOption(tuple(fields), tuple(default), min_fields)


_QICFG_BG96 = {
    "transpktsize": _opt([(1, 1460)], [1024]),
    "transwaittm": _opt([(0, 20)], [2]),
    "dataformat": _opt([(0, 1), (0, 1)], [0, 0]),
    "viewmode": _opt([(0, 1)], [0]),
    "recvind": _opt([(0, 1)], [0]),
    "prefix": _opt(["str", (32, 32, 40, 48, 56, 64, 96)], ["", 96]),
    "tcp/retranscfg": _opt([(3, 20), (5, 1000)], [8, 600]),
}

_QICFG_BG95 = {
    "transpktsize": _opt([(1, 1460)], [1024]),
    "transwaittm": _opt([(0, 20)], [2]),
    "dataformat": _opt([(0, 1), (0, 1)], [0, 0]),
    "viewmode": _opt([(0, 1)], [0]),
    "recvind": _opt([(0, 1)], [0]),
    "sack": _opt([(0, 1)], [0]),
    "tcp/inactivetm": _opt([(0, 65535)], [0]),
    "tcp/keepalive": _opt([(0, 1), (1, 120), (25, 100), (3, 10)], [0, 120, 75, 9], 1),
    "tcp/retranscfg": _opt([(3, 20), (5, 1000)], [12, 600]),
    "ipv6prior": _opt([(0, 1)], [0]),
    "asyncmode": _opt([(0, 1)], [0]),
    "ip_filter": _opt(["str", "str"], ["0", ""]),
    "timestamp": _opt([(0, 1)], [0]),
    "dcdmode": _opt([(0, 1)], [0]),
}

_QICFG_GENERIC = {
    "transpktsize": _opt([(1, 1460)], [1024]),
    "transwaittm": _opt([(0, 20)], [2]),
}

_QICFG_BC25 = {
    "dataformat": _opt([(0, 1), (0, 1)], [0, 0]),
    "viewmode": _opt([(0, 1)], [0]),
    "showlength": _opt([(0, 1)], [0]),
}

_QICFG_RG500U = {
    "transpktsize": _opt([(1, 1460)], [1024]),
    "transwaittm": _opt([(0, 20)], [2]),
    "dataformat": _opt([(0, 1), (0, 1)], [0, 0]),
    "viewmode": _opt([(0, 1)], [0]),
    "recvind": _opt([(0, 1)], [0]),
    "tcp/keepalive": _opt([(0, 1), (1, 1800), (25, 100), (3, 10)], [0, 60, 25, 3], 1),
    "tcp/retranscfg": _opt([(3, 20), (5, 1000)], [8, 600]),
    "dns/cache": _opt([(0, 1)], [0]),
    "qisend/timeout": _opt([(0, 3600)], [0]),
    "passiveclosed": _opt([(0, 1)], [0]),
    "tcp/accept": _opt([(0, 1)], [1]),
    "close/mode": _opt([(0, 1)], [0]),
    "sendinfo": _opt([(0, 1)], [0]),
    "formatcfg": _opt([(0, 1)], [0]),
}


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    manufacturer: str
    model: str
    revision: str
    imei: str = "866425030123456"
    imsi: str = "001010123456789"
    iccid: str = "89860012345678901234"
    operator: str = "EMULATED"
    act: int = 8  # +COPS access technology (8 = LTE Cat-M1)
    # radio (emulator/radio.py): the AT+QCSQ <sysmode> the family prints (None: no AT+QCSQ),
    # its AT+QENG form ("servingcell": RGx00U, "0": BC25), whether it has AT+C5GREG
    qcsq: str | None = "CAT-M1"
    qeng: str | None = None
    c5greg: bool = False
    at_port: str = "uart1"
    boot_urcs: tuple[str, ...] = (
        "RDY",
        "+CFUN: 1",
        "+CPIN: READY",
        "+QIND: SMS DONE",
        "+QIND: PB DONE",
    )

    context_ids: tuple[int, int] = (1, 16)
    connect_ids: tuple[int, int] = (0, 11)
    max_active_contexts: int = 3
    send_max: int = 1460
    read_max: int = 1500
    read_default: int | None = 1500  # None: <read_length> is mandatory
    access_modes: tuple[int, ...] = (
        0,
        1,
        2,
    )  # what the manual allows (2 is refused by the emulator)

    pdp: str = "qiact"  # "qiact" (AT+QIACT/QIDEACT) or "cgact" (BC25: AT+CGACT only)
    has_qiactex: bool = False
    qistate_fields: int = 10
    state_codes: dict = field(
        default_factory=lambda: {OPENING: 1, CONNECTED: 2, LISTENING: 3, CLOSING: 4}
    )
    udp_service_state: str = CONNECTED  # examples show 2 for "UDP SERVICE"
    send_two_stage: bool = False  # BC25: OK, then SEND OK / SEND FAIL
    close_two_stage: bool = False  # BC25: OK, then CLOSE OK
    close_has_timeout: bool = True
    ack_query: bool = True  # AT+QISEND=<id>,0 and AT+QIRD=<id>,0
    qisde_default: int | None = 0  # None: AT+QISDE not supported
    has_qidnsgip: bool = True
    ntp_command: str | None = "+QNTP"
    qisendex: str | None = "id_hex"  # "id_hex", "id_hex_rai", "id_len_hex", None
    qicfg: dict = field(default_factory=lambda: dict(_QICFG_BG96))
    qicfg_set_echoes: bool = False  # BC25 answers a set with the +QICFG: line
    qidnscfg_context: bool = True  # BC25: AT+QIDNSCFG=<pri>[,<sec>] without a context
    recv_len_option: str | None = "recvind"  # "recvind" | "showlength" | None
    errors: dict = field(default_factory=lambda: dict(_BG96_ERRORS))
    err: dict = field(default_factory=lambda: dict(_BG96_ERR))
    geterror_format: str = "{code}, {desc}"
    geterror_lower: bool = True
    tcpip_cme: bool = False  # TCP/IP errors as +CME ERROR: <err> when AT+CMEE>=1
    ping_final_ok: int = 0
    ping_timeout_result: int = 569
    ping_size_max: int | None = None  # None: no <ping_size> parameter
    ping_default_timeout: int = 4
    incoming_access_mode: str = "listener"  # "listener" (QIOPEN note) | "buffer" (URC section)
    incoming_full_server_id: bool = False
    pdpdeact_urc: bool = True
    buff_full_urc: bool = False  # BC25: +QIURC: "recv",<id>,"buff full" when the buffer fills
    qiopen_extra: str | None = None  # None | "protocol_type" (BC25) | "maxnum_timeout" (RG500U)
    failed_open_keeps_id: bool = False
    qistate_test_ranges: bool = False
    qiswtmd_read: bool = False
    qiopen_read: bool = False
    creg: bool = True
    qinistat: bool = True
    qpinc: bool = True  # AT+QPINC (PIN/PUK attempts left): BG96/BG95/UC15/RG500U manuals
    ipv6: bool = True
    dnscfg_same_family: bool = False  # RU §2.3.14: IPv4 DNS only in IPv4, IPv6 only in IPv6
    max_domain: int = 256

    def code(self, key: str) -> int:
        return self.err[key]

    def describe(self, code: int) -> str:
        desc = self.errors.get(code, self.errors.get(self.err["unknown"], "Unknown error"))
        return desc.lower() if self.geterror_lower else desc

    def state_code(self, state: str, service: str) -> int:
        if service == "UDP SERVICE" and state in (CONNECTED, LISTENING):
            state = self.udp_service_state
        return self.state_codes[state]


BG96 = Family(
    name="bg96",
    manufacturer="Quectel",
    model="BG96",
    revision="BG96MAR02A07M1G",
)

BG95 = replace(
    BG96,
    name="bg95",
    model="BG95-S5",
    revision="BG95S5LAR01A01",  # [inference] revision string is not in the manual
    qisendex="id_hex_rai",
    qicfg=dict(_QICFG_BG95),
    errors=dict(_BG95_ERRORS),
    err=dict(_BG95_ERR),
    qcsq="eMTC",
)

GENERIC = replace(
    BG96,
    name="generic",
    model="UC15",  # [inference] the manual never names its product (digest §1.1)
    revision="UC15AR01A01",
    qcsq="WCDMA",
    act=2,
    max_active_contexts=3,
    read_default=None,  # TCP: read_length mandatory; UDP client: ignored
    qisde_default=None,
    qisendex=None,
    qicfg=dict(_QICFG_GENERIC),
    recv_len_option=None,
    errors=dict(_GENERIC_ERRORS),
    err=dict(_GENERIC_ERR),
    ping_final_ok=2,
    ping_timeout_result=1,
    ping_default_timeout=1,
    qiswtmd_read=True,
    qiopen_read=True,
    ipv6=False,
)

BC25 = replace(
    BG96,
    name="bc25",
    manufacturer="Quectel_Ltd",
    model="Quectel_BC25",
    revision="BC25PAR01A01",  # [inference]
    act=9,
    qcsq=None,
    qeng="0",
    boot_urcs=("RDY", "+CPIN: READY"),
    context_ids=(1, 3),
    connect_ids=(0, 5),
    max_active_contexts=3,
    send_max=512,
    read_max=512,
    read_default=None,
    access_modes=(0, 1),
    pdp="cgact",
    qistate_fields=8,
    state_codes={OPENING: 1, CONNECTED: 2, LISTENING: 2, CLOSING: 4},
    send_two_stage=True,
    close_two_stage=True,
    close_has_timeout=False,
    ack_query=False,
    qisde_default=None,
    qisendex="id_len_hex",
    qicfg=dict(_QICFG_BC25),
    qicfg_set_echoes=True,
    qidnscfg_context=False,
    recv_len_option="showlength",
    geterror_format="{code},{desc}",
    ntp_command="+QNTTP",
    ping_final_ok=2,
    ping_timeout_result=1,
    ping_size_max=200,
    incoming_access_mode="buffer",
    pdpdeact_urc=False,
    buff_full_urc=True,
    qiopen_extra="protocol_type",
    qiswtmd_read=True,
    creg=False,
    qinistat=False,
    qpinc=False,  # [inference] not in the BC25 AT command set
)

RG500U = replace(
    BG96,
    name="rg500u",
    model="RG500U",
    revision="RG500UCNAAR01A01M4G",  # [inference]
    act=11,
    qcsq=None,
    qeng="servingcell",
    c5greg=True,
    context_ids=(1, 5),
    max_active_contexts=5,
    has_qiactex=True,
    qisde_default=1,
    has_qidnsgip=False,
    ntp_command=None,
    qisendex=None,
    qicfg=dict(_QICFG_RG500U),
    errors=dict(_RG500U_ERRORS),
    tcpip_cme=True,
    ping_size_max=1500,
    incoming_full_server_id=True,
    qiopen_extra="maxnum_timeout",
    dnscfg_same_family=True,
    failed_open_keeps_id=True,
    qistate_test_ranges=True,
)

FAMILIES: dict[str, Family] = {f.name: f for f in (BG96, BG95, GENERIC, BC25, RG500U)}
