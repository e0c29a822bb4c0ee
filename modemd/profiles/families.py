"""The five families of the seed manuals, as data (seeds-comparison §1-§7)."""

from __future__ import annotations

from types import MappingProxyType

from .base import BASE_EXPECT, BASE_TIMEOUTS, DEADLINE, FAST, STANDARD_ERRORS, Profile

BG95_ERRORS = MappingProxyType({
    **STANDARD_ERRORS,
    567: "connection_reset",
    570: "pdp_broken",
    573: "port_busy",            # S5 swaps 573/574 (§5.1)
    574: "pdp_already_active",
})

# The older generic manual numbers everything differently (§5.1, column U).
GENERIC_ERRORS = MappingProxyType({
    0: "ok",
    552: "unknown_error",
    553: "operation_blocked",
    554: "socket_connect_failed",   # "Open connection failed"
    555: "socket_closed",           # "Connection has been closed"
    556: "pdp_activate_failed",
    557: "invalid_ip_address",
    558: "invalid_parameters",
    559: "operation_not_supported",
    560: "create_socket_failed",
    561: "invalid_socket_id",
    562: "socket_id_used",          # "Specified socket index has been used"
    563: "pdp_already_active",
    564: "invalid_app_type",
    565: "dns_failed",
    566: "invalid_operation",
    567: "socket_listen_failed",
    568: "socket_bind_failed",
    569: "memory_not_enough",
    570: "socket_index_unused",
    571: "operation_timeout",
    572: "ntp_no_response",
    573: "pdp_activating",
    574: "dns_busy",
})

BC25_STATES = MappingProxyType(
    {0: "initial", 1: "opening", 2: "connected", 3: "closing", 4: "closing", 5: "closed"}
)

BC25_TIMEOUTS = MappingProxyType({
    **BASE_TIMEOUTS,
    "AT+QIOPEN": 5.0,      # OK within 300 ms; the URC has its own wait (36 s / 176 s)
    "AT+QICLOSE": 10.0,    # OK, then CLOSE OK ("maximum response time is 10s")
    "AT+QISEND": 10.0,     # OK, then SEND OK / SEND FAIL
    "AT+QIRD": 5.0,
    "AT+QPING": 5.0,
    "AT+QIDNSGIP": 5.0,
    "AT+QNTTP": 5.0,
    "AT+CGACT": 150.0,
})

# BC25: QIOPEN answers OK within 300 ms (its URC has its own wait), so it is probed like any fast
# command; QISEND is OK, then SEND OK once the data reached the NB-IoT stack (10 s, like QICLOSE's
# CLOSE OK, BC §2.1.4 / §2.1.2): the deadline is the expectation. AT+CGACT is the flowchart's
# activation (150 s, decided by the PDP keeper).
BC25_EXPECT = MappingProxyType({
    **BASE_EXPECT,
    "AT+QIOPEN": FAST,
    "AT+QISEND": DEADLINE,
    "AT+CGACT": None,
})

BG95 = Profile(
    name="bg95",
    manual="000",
    title="BG95-S5 (LTE Cat M / NB-IoT + satellite)",
    models=("BG95", "BG77", "BG600"),
    max_credential=128,
    max_active_contexts=3,       # S5 §2.3.2: 3 on Cat M / EGPRS (2 on NB2), contextID 1-16
    errors=BG95_ERRORS,
    signal_query="qcsq",
)

GENERIC = Profile(
    name="generic",
    manual="001",
    title="older generic Quectel TCP/IP (UMTS era, IPv4 only; UC15/UC20/EC2x-class)",
    models=("UC15", "UC20", "EC20", "EC21", "EC25", "EG25", "EG21", "EC200"),
    ip_types=("ipv4",),          # U §2.1 <context_type>: 1 IPV4 only
    max_active_contexts=3,       # U §2.2: at most 3 contexts active, contextID 1-16
    has_qisde=False,
    has_qisendex=False,
    read_length_required=True,
    qistate_by_context=True,
    errors=GENERIC_ERRORS,
    ping_success=2,
    ping_timeout_result=1,       # U §2.10: 0 received, 1 timeout
    keepalive=None,              # no "tcp/keepalive" in U's QICFG (seeds-comparison §3.15)
    cs_registration=True,
    ps_registration=("AT+CGREG?",),
    registration_kinds=("CREG", "CGREG"),
    sim_status_commands=("AT+CPIN?", "AT+QINISTAT"),
)

BC25 = Profile(
    name="bc25",
    manual="002",
    title="BC25 / BC32 (NB-IoT)",
    models=("BC25", "BC32"),
    context_ids=range(1, 4),     # BC §2.1.1 QIOPEN test: (1-3); activated with AT+CGACT
    max_active_contexts=3,       # [inference] the manual gives no limit beyond the 1-3 range
    connect_ids=range(0, 6),
    max_send=512,
    max_read=512,
    has_qicsgp=False,
    has_qiact=False,
    has_ack_query=False,
    has_read_totals=False,
    has_qisde=False,
    has_transparent=False,
    has_pdpdeact_urc=False,
    has_qpinc=False,             # [inference] not in the BC25 AT command set
    ntp_command="AT+QNTTP",
    ip_types=("ipv4", "ipv6"),    # <protocol_type> 0 IPv4, 1 IPv6 (BC §2.1.1)
    qiopen_protocol_type=True,
    dnscfg_context=False,        # AT+QIDNSCFG=<PrimaryDns>[,<SecondaryDns>] (BC §2.1.14)
    tcp_listener_ipv6=False,     # "TCP LISTENER is not supported on IPv6" (BC §2.1.1 notes)
    udp_service=False,           # "UDP SERVICE is not supported now" (BC §2.1.1)
    qiclose_has_timeout=False,
    two_stage_send=True,
    two_stage_close=True,
    read_length_required=True,
    qistate_fields=8,
    socket_states=BC25_STATES,
    ping_success=2,
    ping_timeout_result=1,       # BC Table 2: 1 PING_TIMEOUT
    keepalive="qikalive",        # AT+QIKALIVE (BC §2.1.13): idle 1-36000 s, interval 10-20 s
    keepalive_idle_unit=1.0,
    keepalive_idle_range=(1, 36000),
    keepalive_interval=10,
    keepalive_probes=9,
    ps_registration=("AT+CEREG?",),
    registration_kinds=("CEREG",),
    signal_query="qeng0",        # BC25 has no AT+QCSQ: AT+QENG=0 prints the serving cell
    # dataformat/viewmode/showlength persist in NVRAM (§3.15): force the values modemd parses.
    init_commands=(
        'AT+QICFG="dataformat",0,0',
        'AT+QICFG="viewmode",0',
        'AT+QICFG="showlength",0',
    ),
    timeouts=BC25_TIMEOUTS,
    expects=BC25_EXPECT,
    open_urc_timeout_ip=36.0,
    open_urc_timeout_domain=176.0,
)

BG96 = Profile(
    name="bg96",
    manual="003",
    title="BG96 (LTE Cat M1 / NB1 / EGPRS)",
    models=("BG96",),
    max_active_contexts=3,       # 96 §2.1.2: "three", contextID 1-16 (trap 36)
    keepalive=None,              # BG96's QICFG has no "tcp/keepalive" (seeds-comparison §3.15)
    cs_registration=True,
    signal_query="qcsq",
)

RG500U = Profile(
    name="rg500u",
    manual="004",
    title="RG200U / RG500U / RM500U (5G)",
    models=("RG500U", "RG200U", "RM500U"),
    context_ids=range(1, 6),     # RU §2.3.1: contextID 1-5
    max_active_contexts=5,       # RU §2.3.3/§2.3.5: 5, "actually depends on (U)SIM card"
    dnscfg_same_family=True,     # RU §2.3.14 notes
    has_qiactex=True,
    qisde_default=1,             # echo of QISEND data is ON by default (RU §2.3.15)
    has_qidnsgip=False,
    has_qisendex=False,
    ntp_command=None,
    keepalive_idle_unit=1.0,     # RU "tcp/keepalive": idle_time in seconds, 1-1800
    keepalive_idle_range=(1, 1800),
    ps_registration=("AT+CGREG?", "AT+CEREG?", "AT+C5GREG?"),
    registration_kinds=("CREG", "CGREG", "CEREG", "C5GREG"),
    signal_query="qeng_servingcell",  # AT+QENG="servingcell": LTE / NR5G-SA / NR5G-NSA
    server_init_commands=('AT+QCFG="nat",1',),
)

PROFILES = {p.name: p for p in (BG95, GENERIC, BC25, BG96, RG500U)}
