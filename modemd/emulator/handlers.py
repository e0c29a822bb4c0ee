"""AT command handlers of the emulated module.

`Handlers` implements the BG96 manual (003); the other families are the same code driven by their
`Family` record plus the small subclasses at the end of this file.

A handler gets a parsed `Command` and returns a `Reply` (information frames + final result code +
callbacks to run once the final result is on the line). Handlers that need the line for themselves
(QISEND's prompt and payload) write everything and return `Reply(final=None)`.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from typing import TYPE_CHECKING

import trio

from . import radio
from .atparse import BadParam, Command, quote_ok
from .config import is_ip_literal, is_loopback
from .families import CONNECTED
from .session import BENIGN_URC, Reply, frame
from .sim import BLOCKED, BUSY, CME_TEXT, NOT_INSERTED
from .sockets import LISTENER, SERVICE, SERVICE_TYPES, TCP, UDP, ModSocket

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session

TCPIP_COMMANDS = {
    "+QICSGP",
    "+QIACT",
    "+QIDEACT",
    "+QIACTEX",
    "+QIDEACTEX",
    "+QIOPEN",
    "+QICLOSE",
    "+QISTATE",
    "+QISEND",
    "+QIRD",
    "+QISENDEX",
    "+QISWTMD",
    "+QPING",
    "+QNTP",
    "+QNTTP",
    "+QIDNSCFG",
    "+QIDNSGIP",
    "+QICFG",
    "+QISDE",
    "+QIKALIVE",
}
PROMPT_COMMANDS = {"+QISEND", "+QISENDEX"}
CTRL_Z = 0x1A
ESC = 0x1B
GARBAGE = b"\x00\xff\r\nOK\r\n+QIURC:\x1b\x7f\x80"  # line noise (Emulator.qird_fault)


def _method_name(name: str) -> str:
    if name == "":
        return "h_AT"
    return "h_" + name.lstrip("+").replace("&", "AMP_")


def _range(lo_hi: tuple[int, int]) -> str:
    return f"({lo_hi[0]}-{lo_hi[1]})"


class Handlers:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.f = session.family
        self.emu = session.emu
        self.term = b"\r"  # terminator of the command line being handled
        self.max_clients = 1 << 30  # set by qiopen_extra (RG500U <TCP_client_maxnum>)

    # ---- dispatch & result helpers --------------------------------------------------------
    def supported(self, name: str) -> bool:
        f = self.f
        if name in ("+QICSGP", "+QIACT", "+QIDEACT"):
            return f.pdp == "qiact"
        if name in ("+QIACTEX", "+QIDEACTEX"):
            return f.has_qiactex
        if name == "+QISDE":
            return f.qisde_default is not None
        if name == "+QIDNSGIP":
            return f.has_qidnsgip
        if name in ("+QNTP", "+QNTTP"):
            return f.ntp_command == name
        if name == "+QISENDEX":
            return f.qisendex is not None
        if name == "+CREG":
            return f.creg
        if name == "+C5GREG":
            return f.c5greg
        if name == "+QCSQ":
            return f.qcsq is not None
        if name == "+QENG":
            return f.qeng is not None
        if name == "+QINISTAT":
            return f.qinistat
        if name == "+QPINC":
            return f.qpinc
        if name == "+QIKALIVE":
            return f.name == "bc25"
        return True

    async def dispatch(self, cmd: Command, *, multi: bool, term: bytes) -> Reply:
        meth = getattr(self, _method_name(cmd.name), None)
        if meth is None or not self.supported(cmd.name):
            return Reply(final="ERROR")
        if multi and cmd.name in PROMPT_COMMANDS:
            return Reply(final="ERROR")
        tcpip = cmd.name in TCPIP_COMMANDS
        if tcpip:
            self.s.lasterr = 0
        self.term = term
        try:
            return await meth(cmd)
        except BadParam:
            return (
                self.tcpip_error("invalid_param") if tcpip else self.cme(50, "Incorrect parameters")
            )

    def ok(self, *lines: str | bytes) -> Reply:
        return Reply([frame(x) for x in lines])

    def error(self) -> Reply:
        return Reply(final="ERROR")

    def cme(self, code: int, text: str) -> Reply:
        if self.s.cmee == 1:
            return Reply(final=f"+CME ERROR: {code}")
        if self.s.cmee == 2:
            return Reply(final=f"+CME ERROR: {text}")
        return Reply(final="ERROR")

    def tcpip_error(self, key: str) -> Reply:
        code = self.f.code(key)
        self.s.lasterr = code
        if self.f.tcpip_cme and self.s.cmee:
            return Reply(final=f"+CME ERROR: {code}")
        return Reply(final="ERROR")

    def sim_error(self) -> Reply:
        return self.cme(10, "SIM not inserted")

    def check_ctx(self, cmd: Command, i: int) -> int:
        return cmd.int(i, *self.f.context_ids)

    def check_cid(self, cmd: Command, i: int) -> int:
        return cmd.int(i, *self.f.connect_ids)

    def resolve(self, host: str) -> str | None:
        """The emulator's DNS: IP literals stand for themselves, names come from the hosts map."""
        if is_ip_literal(host):
            return str(ipaddress.ip_address(host))
        return self.emu._hosts.get(host.lower())

    def render_recv(self, data: bytes) -> bytes:
        fmt = self.s.qicfg.get("dataformat")
        if fmt and fmt[1] == 1:
            return data.hex().upper().encode()
        return data

    # ---- basic commands -------------------------------------------------------------------
    async def h_AT(self, cmd: Command) -> Reply:
        return self.ok()

    async def h_E(self, cmd: Command) -> Reply:
        if cmd.num not in (None, 0, 1):
            return self.error()
        self.s.echo = cmd.num == 1
        return self.ok()

    async def h_V(self, cmd: Command) -> Reply:
        return self.ok() if cmd.num in (None, 1) else self.error()

    async def h_Q(self, cmd: Command) -> Reply:
        return self.ok() if cmd.num in (None, 0) else self.error()

    async def h_I(self, cmd: Command) -> Reply:
        if cmd.num not in (None, 0):
            return self.error()
        return self.ok(
            self.f.manufacturer.encode()
            + b"\r\n"
            + self.f.model.encode()
            + b"\r\nRevision: "
            + self.f.revision.encode()
        )

    async def h_AMP_F(self, cmd: Command) -> Reply:
        self.s.echo = True
        return self.ok()

    async def h_Z(self, cmd: Command) -> Reply:
        self.s.echo = True
        return self.ok()

    async def h_AMP_W(self, cmd: Command) -> Reply:
        return self.ok()

    async def h_AMP_D(self, cmd: Command) -> Reply:
        return self.ok()

    async def h_AMP_C(self, cmd: Command) -> Reply:
        return self.ok()

    async def _ident(self, cmd: Command, value: str) -> Reply:
        if cmd.kind == "test":
            return self.ok()
        if cmd.kind != "exec":
            return self.error()
        return self.ok(value)

    async def h_GMI(self, cmd: Command) -> Reply:
        return await self._ident(cmd, self.f.manufacturer)

    h_CGMI = h_GMI

    async def h_GMM(self, cmd: Command) -> Reply:
        return await self._ident(cmd, self.f.model)

    h_CGMM = h_GMM

    async def h_GMR(self, cmd: Command) -> Reply:
        return await self._ident(cmd, self.f.revision)

    h_CGMR = h_GMR

    async def h_GSN(self, cmd: Command) -> Reply:
        return await self._ident(cmd, self.f.imei)

    async def h_CGSN(self, cmd: Command) -> Reply:
        if cmd.kind == "write":
            return self.ok(f'+CGSN: "{self.f.imei}"')
        return await self._ident(cmd, self.f.imei)

    async def h_CIMI(self, cmd: Command) -> Reply:
        code = self.emu.sim.status_error()
        if code is not None:
            return self.sim_cme(code)
        return await self._ident(cmd, self.f.imsi)

    async def h_QCCID(self, cmd: Command) -> Reply:
        if not self.emu.sim.inserted:  # EF_ICCID is readable without the PIN
            return self.sim_error()
        return await self._ident(cmd, f"+QCCID: {self.f.iccid}")

    async def h_CPIN(self, cmd: Command) -> Reply:
        sim = self.emu.sim
        if cmd.kind == "test":
            return self.ok()
        if cmd.kind == "read":
            if sim.state in (NOT_INSERTED, BLOCKED, BUSY):
                return self.sim_cme(sim.status_error() or 10)
            return self.ok(f"+CPIN: {sim.state}")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 2)
        code, new_pin = cmd.str(0, maxlen=8), (cmd.str(1, maxlen=8) if cmd.has(1) else None)
        error = sim.enter(code, new_pin)
        if error is not None:
            return self.sim_cme(error)
        reply = self.ok()
        # the state changed: +CPIN: READY, then what a card ready at boot is followed by
        for line in ("+CPIN: READY", *(x for x in self.f.boot_urcs if x.startswith("+QIND:"))):
            reply.after.append(lambda line=line: self.s.urc(line))
        return reply

    async def h_QPINC(self, cmd: Command) -> Reply:
        """AT+QPINC: the PIN / PUK attempts left (Quectel; not on every family)."""
        sim = self.emu.sim
        if cmd.kind == "test":
            return self.ok('+QPINC: ("SC","P2")')
        if not sim.inserted:
            return self.sim_error()
        sc = f'+QPINC: "SC",{sim.pin_left},{sim.puk_left}'
        if cmd.kind == "read":
            return self.ok(sc, '+QPINC: "P2",3,10')
        if cmd.kind == "write" and cmd.str(0) == "SC":
            return self.ok(sc)
        if cmd.kind == "write" and cmd.str(0) == "P2":
            return self.ok('+QPINC: "P2",3,10')
        return self.cme(50, "Incorrect parameters")

    def sim_cme(self, code: int) -> Reply:
        return self.cme(code, CME_TEXT.get(code, "SIM failure"))

    async def h_QINISTAT(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok("+QINISTAT: (0-7)")
        return self.ok(f"+QINISTAT: {7 if self.emu.sim.ready else 0}")

    async def _reg(self, cmd: Command) -> Reply:
        name = cmd.name
        top = radio.REG_MAX_N[name]
        if cmd.kind == "test":
            return self.ok(f"{name}: (0-{top})")
        if cmd.kind == "write":
            self.s.reg_urc[name] = cmd.int(0, 0, top)
            return self.ok()
        if cmd.kind == "read":
            return self.ok(radio.reg_read(name, self.s.reg_urc[name], self.s.reg_stat(),
                                          self.emu.radio, self.reg_act()))
        return self.error()

    def reg_act(self) -> int:
        return radio.reg_act(self.emu.radio, self.f.act)

    h_CREG = _reg
    h_CGREG = _reg
    h_CEREG = _reg
    h_C5GREG = _reg

    def registration_changed(self) -> None:
        stat = self.s.reg_stat()
        for name, n in self.s.reg_urc.items():
            if not self.supported(name):
                continue
            line = radio.reg_urc(name, n, stat, self.emu.radio, self.reg_act())
            if line is not None:
                self.s.urc(line)

    async def h_COPS(self, cmd: Command) -> Reply:
        r = self.emu.radio
        if cmd.kind == "test":
            act = radio.cops_act(r, self.f.act)
            return self.ok(f'+COPS: (2,"{r.operator}","{r.operator}","{r.numeric}",{act}),,(0-4),(0-2)')
        if cmd.kind == "read":
            return self.ok(radio.cops_line(r, self.f.act, self.s.registered, self.s.cops_format))
        if cmd.kind == "write" and cmd.int(0, 0, 4) == 3:
            self.s.cops_format = cmd.int(1, 0, 2)
        return self.ok()

    async def h_CSQ(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok("+CSQ: (0-31,99),(0-7,99)")
        return self.ok(radio.csq_line(self.emu.radio, self.s.cfun == 1))

    async def h_QCSQ(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok('+QCSQ: ("NOSERVICE","GSM","CAT-M1","CAT-NB1")')
        assert self.f.qcsq is not None
        return self.ok(radio.qcsq_line(self.emu.radio, self.f.qcsq, self.s.registered))

    async def h_QENG(self, cmd: Command) -> Reply:
        if cmd.kind != "write":
            return self.error()
        what = cmd.str(0, default="")
        if what != self.f.qeng or cmd.args[0].quoted != (what == "servingcell"):
            raise BadParam("qeng")
        if what == "servingcell":
            return self.ok(*radio.qeng_servingcell_lines(self.emu.radio, self.s.registered))
        return self.ok(radio.qeng0_line(self.emu.radio, self.s.registered))

    async def h_CFUN(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok("+CFUN: (0,1,4),(0-1)")
        if cmd.kind == "read":
            return self.ok(f"+CFUN: {self.s.cfun}")
        if cmd.kind != "write":
            return self.error()
        fun = cmd.int(0, 0, 4)
        rst = cmd.int(1, 0, 1, default=0)
        if fun not in (0, 1, 4):
            raise BadParam("fun")
        if rst == 1:
            if fun != 1:
                raise BadParam("rst")
            reply = self.ok()
            reply.after.append(lambda: self.emu._reboot_soon(self.s))
            return reply
        was = self.s.registered
        self.s.cfun = fun
        if fun != 1:
            for ctx in list(self.s.contexts):
                self.s.deactivate(ctx, forget=False)
        if was != self.s.registered:
            self.registration_changed()
        return self.ok()

    async def h_CMEE(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok("+CMEE: (0-2)")
        if cmd.kind == "read":
            return self.ok(f"+CMEE: {self.s.cmee}")
        if cmd.kind == "write":
            self.s.cmee = cmd.int(0, 0, 2)
            return self.ok()
        self.s.cmee = 0
        return self.ok()

    async def h_QPOWD(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok("+QPOWD: (0,1)")
        mode = cmd.int(0, 0, 1) if cmd.kind == "write" else 1
        session = self.s
        session.stopping = True  # no further input or URCs
        await session.write_reply([], "OK")
        if mode == 1:
            async with session.out_lock:
                await session.write(frame("POWERED DOWN"))
        self.emu._power_down_soon(session)
        return Reply(final=None)

    async def h_CGDCONT(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f'+CGDCONT: {_range(self.f.context_ids)},"IP",,,(0-2),(0-4)')
        if cmd.kind == "read":
            lines = []
            for c in sorted(self.s.contexts.values(), key=lambda c: c.cid):
                pdp = {1: "IP", 2: "IPV6", 3: "IPV4V6"}.get(c.ctype, "IP")
                lines.append(f'+CGDCONT: {c.cid},"{pdp}","{c.apn}","0.0.0.0",0,0')
            return self.ok(*lines)
        if cmd.kind != "write":
            return self.error()
        ctx = self.check_ctx(cmd, 0)
        c = self.s.context(ctx)
        if cmd.has(1):
            c.ctype = {"IP": 1, "IPV6": 2, "IPV4V6": 3}.get(cmd.str(1).upper(), 0)
            if not c.ctype:
                raise BadParam("pdp type")
        if cmd.has(2):
            c.apn = cmd.str(2, maxlen=99)
        return self.ok()

    async def h_CGACT(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok("+CGACT: (0,1)")
        if cmd.kind == "read":
            lines = [
                f"+CGACT: {c.cid},{int(c.active)}"
                for c in sorted(self.s.contexts.values(), key=lambda c: c.cid)
            ]
            return self.ok(*lines)
        if cmd.kind != "write":
            return self.error()
        state = cmd.int(0, 0, 1)
        ctx = self.check_ctx(cmd, 1)
        c = self.s.context(ctx)
        if state == 1:
            if c.active:
                return self.ok()
            ok = await self._activate(c)
            return self.ok() if ok else self.cme(148, "Unspecified GPRS error")
        await trio.sleep(self.emu.cfg.qideact_delay)
        self.s.deactivate(ctx, forget=True)
        return self.ok()

    async def h_CGATT(self, cmd: Command) -> Reply:
        if cmd.kind == "read":
            return self.ok(f"+CGATT: {int(self.s.registered)}")
        if cmd.kind == "test":
            return self.ok("+CGATT: (0,1)")
        return self.ok()

    async def h_CGPADDR(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+CGPADDR: {_range(self.f.context_ids)}")
        if cmd.kind == "write":
            ctxs = [self.s.context(self.check_ctx(cmd, 0))]
        else:
            ctxs = self.s.active_contexts()
        return self.ok(*[self.cgpaddr_line(c) for c in ctxs])

    def cgpaddr_line(self, c) -> str:
        if not c.active:
            return f'+CGPADDR: {c.cid},"0.0.0.0"'
        addrs = {1: [c.ip], 2: [c.ip6], 3: [c.ip, c.ip6]}.get(c.ctype, [c.ip])
        return f"+CGPADDR: {c.cid}," + ",".join(f'"{a}"' for a in addrs)

    async def h_CCLK(self, cmd: Command) -> Reply:
        if cmd.kind == "read":
            now = _dt.datetime.now(_dt.timezone.utc)
            return self.ok(now.strftime('+CCLK: "%y/%m/%d,%H:%M:%S+00"'))
        return self.ok()

    async def h_IPR(self, cmd: Command) -> Reply:
        if cmd.kind == "read":
            return self.ok(f"+IPR: {self.emu._baud or 115200}")
        if cmd.kind == "test":
            return self.ok("+IPR: (),(9600,19200,38400,57600,115200,230400,460800,921600)")
        if cmd.kind == "write":
            cmd.int(0, 0, 4000000)
        return self.ok()

    async def h_IFC(self, cmd: Command) -> Reply:
        if cmd.kind == "read":
            return self.ok("+IFC: 0,0")
        return self.ok()

    async def h_QURCCFG(self, cmd: Command) -> Reply:
        if cmd.kind == "write" and len(cmd.args) == 1:
            return self.ok(f'+QURCCFG: "urcport","{self.f.at_port}"')
        return self.ok()

    async def h_QCFG(self, cmd: Command) -> Reply:
        if cmd.kind != "write":
            return self.ok()
        name = cmd.str(0).lower()
        if len(cmd.args) == 1:
            vals = self.s.qcfg.get(name, ["0"])
            return self.ok(f'+QCFG: "{name}",' + ",".join(vals))
        self.s.qcfg[name] = [a.text if not a.quoted else f'"{a.text}"' for a in cmd.args[1:]]
        return self.ok()

    async def h_QINDCFG(self, cmd: Command) -> Reply:
        return self.ok()

    async def h_CSCS(self, cmd: Command) -> Reply:
        return self.ok('+CSCS: "GSM"') if cmd.kind == "read" else self.ok()

    # ---- PDP contexts ---------------------------------------------------------------------
    async def _activate(self, c) -> bool:
        """Blocking activation (the line is free for URCs meanwhile). False: failed."""
        s, emu = self.s, self.emu
        if len(s.active_contexts()) >= self.f.max_active_contexts:
            return False
        await trio.sleep(emu._qiact_delay)
        if emu._qiact_fail > 0:
            emu._qiact_fail -= 1
            return False
        if not s.registered:
            return False
        c.active = True
        return True

    async def h_QICSGP(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(
                f"+QICSGP: {_range(self.f.context_ids)},(1-3),<APN>,<username>,<password>,(0-3)"
            )
        if cmd.kind != "write":
            return self.error()
        ctx = self.check_ctx(cmd, 0)
        c = self.s.context(ctx)
        if len(cmd.args) == 1:
            return self.ok(f'+QICSGP: {c.ctype},"{c.apn}","{c.user}","{c.password}",{c.auth}')
        cmd.nargs(3, 6)
        ctype = cmd.int(1, 1, 3 if self.f.ipv6 else 1)
        apn = cmd.str(2, maxlen=99)
        user = cmd.str(3, default="", maxlen=127)
        password = cmd.str(4, default="", maxlen=127)
        auth = cmd.int(5, 0, 3, default=c.auth)
        if cmd.has(3) != cmd.has(4):
            raise BadParam("username without password")
        c.ctype, c.apn, c.user, c.password, c.auth = ctype, apn, user, password, auth
        return self.ok()

    def qiact_line(self, prefix: str, c) -> str:
        """`<context_type>[,<IP_address>]`: one address; an IPv4v6 context shows the version
        "ipv6prior" prefers (S5 §2.3.15) [inference: the manuals list types 1 and 2 only]."""
        v6 = c.ctype == 2 or (c.ctype == 3 and self.s.qicfg.get("ipv6prior", [0])[0] == 1)
        return f'{prefix}: {c.cid},1,{2 if v6 else 1},"{c.ip6 if v6 else c.ip}"'

    async def h_QIACT(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+QIACT: {_range(self.f.context_ids)}")
        if cmd.kind == "read":
            return self.ok(*[self.qiact_line("+QIACT", c) for c in self.s.active_contexts()])
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 1)
        c = self.s.context(self.check_ctx(cmd, 0))
        if c.active:
            return self.tcpip_error("pdp_already_active")
        if not await self._activate(c):
            return self.tcpip_error("pdp_open")
        return self.ok()

    async def h_QIDEACT(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+QIDEACT: {_range(self.f.context_ids)}")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 1)
        ctx = self.check_ctx(cmd, 0)
        await trio.sleep(self.emu.cfg.qideact_delay)
        if self.emu._qideact_fail > 0:
            self.emu._qideact_fail -= 1
            return self.tcpip_error("pdp_close")
        self.s.deactivate(ctx, forget=True)
        return self.ok()

    # ---- sockets --------------------------------------------------------------------------
    def qiopen_test(self) -> str:
        return (
            f"+QIOPEN: {_range(self.f.context_ids)},{_range(self.f.connect_ids)},"
            '"TCP/UDP/TCP LISTENER/UDP SERVICE","<IP_address>/<domain_name>",'
            f"<remote_port>,<local_port>,(0-{max(self.f.access_modes)})"
        )

    def qiopen_extra(self, cmd: Command) -> int:
        """Parse family specific trailing QIOPEN parameters; returns the number consumed."""
        return 0

    async def h_QIOPEN(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(self.qiopen_test())
        if cmd.kind == "read" and self.f.qiopen_read:
            return self.ok()
        if cmd.kind != "write":
            return self.error()
        self.max_clients = 1 << 30
        extra = self.qiopen_extra(cmd)
        cmd.nargs(5, 7 + extra)
        ctx = self.check_ctx(cmd, 0)
        cid = self.check_cid(cmd, 1)
        service = cmd.str(2).upper()
        if service not in SERVICE_TYPES:
            raise BadParam("service type")
        host = cmd.str(3, maxlen=self.f.max_domain)
        if not host or not quote_ok(host):
            raise BadParam("address")
        rport = cmd.int(4, 0, 65535)
        lport = cmd.int(5, 0, 65535, default=0)
        mode = cmd.int(6, 0, 2, default=0)
        if mode not in self.f.access_modes:
            raise BadParam("access mode")
        if mode == 2:
            return self.tcpip_error("not_supported")  # the emulator has no transparent mode
        if service in (LISTENER, SERVICE) and lport == 0:
            raise BadParam("local port")
        c = self.s.contexts.get(ctx)
        if c is None or not c.active:
            return self.tcpip_error("pdp_broken")
        reply = self.ok()
        existing = self.s.sockets.get(cid)
        if existing is not None:
            code = self.f.code("socket_id_used")
            self.s.lasterr = code
            reply.after.append(lambda: self.s.urc(f"+QIOPEN: {cid},{code}"))
            return reply
        err = 0
        if service in (LISTENER, SERVICE):
            ip = "127.0.0.1" if not (is_ip_literal(host) and is_loopback(host)) else host
            if ":" in host and is_ip_literal(host):
                ip = "::1"
            if self.wrong_version(c, ip):  # the local address of a version the context lacks
                err = self.f.code("bind")
            for other in self.s.sockets.values():
                if (
                    other.service in (LISTENER, SERVICE)
                    and other.local_port == lport
                    and not other.dead
                ):
                    err = self.f.code("port_busy")
        else:
            ip = self.resolve(host)
            if ip is not None and self.wrong_version(c, ip):
                err = self.f.code("connect_failed")
        if self.emu._open_fail:
            err = self.emu._open_fail.pop(0)  # fault injection: this result code, whatever else
        sock = ModSocket(
            self.s, cid, ctx, service, mode, host, rport if service in (TCP, UDP) else 0, lport
        )
        if service == LISTENER:
            sock.max_clients = self.max_clients
        self.s.adopt(sock)
        reply.after.append(lambda: self.s.spawn(sock.open_task, ip, err))
        return reply

    def wrong_version(self, c, ip: str) -> bool:
        """The address is of an IP version the context does not carry (no NAT64 here)."""
        return ipaddress.ip_address(ip).version not in c.versions

    async def h_QICLOSE(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            if self.f.close_has_timeout:
                return self.ok(f"+QICLOSE: {_range(self.f.connect_ids)},(0-65535)")
            return self.ok(f"+QICLOSE: {_range(self.f.connect_ids)}")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 2 if self.f.close_has_timeout else 1)
        cid = self.check_cid(cmd, 0)
        timeout = cmd.int(1, 0, 65535, default=10)
        await self.close_socket(cid, timeout)
        return self.close_reply(cid)

    def close_reply(self, cid: int) -> Reply:
        return self.ok()

    async def close_socket(self, cid: int, timeout: float) -> None:
        sock = self.s.sockets.get(cid)
        if sock is None:
            return
        if not sock.dead and sock.is_stream and sock.tx:
            with trio.move_on_after(timeout):
                await sock.wait_drained()
        sock.kill()
        self.s.drop_pushes(sock)
        self.s.forget(sock)

    def qistate_line(self, sock: ModSocket) -> str:
        if sock.service in (LISTENER, SERVICE):
            c = self.s.context(sock.ctx)  # the module's own address (S5 §3.7.1, §3.9.1)
            ip = c.ip6 if ":" in (sock.remote_ip or sock.remote_host) else c.ip
            rport = 0
        else:
            ip = sock.remote_ip or sock.remote_host
            rport = sock.remote_port
        state = self.f.state_code(sock.state, sock.service)
        head = f'+QISTATE: {sock.cid},"{sock.service}","{ip}",{rport},{sock.local_port},{state},{sock.ctx}'
        if self.f.qistate_fields == 8:
            return f"{head},{sock.mode}"
        return f'{head},{sock.server_id},{sock.mode},"{self.f.at_port}"'

    async def h_QISTATE(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            if self.f.qistate_test_ranges:
                return self.ok(
                    f"+QISTATE: (0,1),{_range(self.f.context_ids)},{_range(self.f.connect_ids)}"
                )
            return self.ok()
        socks = sorted(self.s.sockets.values(), key=lambda x: x.cid)
        if cmd.kind == "write":
            cmd.nargs(2, 2)
            qtype = cmd.int(0, 0, 1)
            if qtype == 0:
                ctx = self.check_ctx(cmd, 1)
                socks = [x for x in socks if x.ctx == ctx]
            else:
                cid = self.check_cid(cmd, 1)
                socks = [x for x in socks if x.cid == cid]
        return self.ok(*[self.qistate_line(x) for x in socks])

    # ---- sending --------------------------------------------------------------------------
    def send_target(self, cid: int) -> ModSocket | None:
        sock = self.s.sockets.get(cid)
        if sock is None or sock.dead or sock.state != CONNECTED or sock.service == LISTENER:
            return None
        return sock

    def qisend_test(self) -> str:
        return f"+QISEND: {_range(self.f.connect_ids)},(0-{self.f.send_max})"

    async def h_QISEND(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(self.qisend_test())
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 4)
        cid = self.check_cid(cmd, 0)
        length = cmd.int(1, 0, self.f.send_max) if cmd.has(1) else None
        if length == 0:
            if not self.f.ack_query:
                raise BadParam("length 0")
            cmd.nargs(2, 2)
            sock = self.s.sockets.get(cid)
            if sock is None or sock.service == LISTENER:
                return self.tcpip_error("socket_closed")
            unacked = sock.unacked()
            return self.ok(f"+QISEND: {sock.total_sent},{sock.total_sent - unacked},{unacked}")
        if self.injected_error("QISEND"):
            return self.error()
        ip, port = "", 0
        sock = self.send_target(cid)
        if sock is not None and sock.service == SERVICE:
            cmd.nargs(4, 4)
            ip = cmd.str(2)
            port = cmd.int(3, 0, 65535)
            if not is_ip_literal(ip) or length is None:
                raise BadParam("remote address")
            ip = str(ipaddress.ip_address(ip))
        elif len(cmd.args) > 2:
            raise BadParam("address only for UDP SERVICE")
        if sock is None:
            return self.tcpip_error("socket_closed")
        return await self.prompt_send(sock, length, ip, port)

    async def read_payload(self, length: int | None) -> bytes | None:
        """Read the payload after the prompt: fixed length, or up to Ctrl+Z (None: Esc/too long)."""
        inbuf = self.s.inbuf
        if length is not None:
            data = await inbuf.read_exact(length)
        else:
            data, stop = await inbuf.read_until(bytes([CTRL_Z, ESC]), self.f.send_max)
            if stop == ESC:
                return None
        if self.s.qisde:
            await self.s.write(data, boundary=False)
        return data

    def accept_send(self, sock: ModSocket, data: bytes) -> bool:
        """Take data into the socket's send buffer (False: buffer full or injected failure)."""
        emu = self.emu
        if emu._send_fail > 0:
            emu._send_fail -= 1
            return False
        if emu.noise.send_fails():
            return False
        if sock.dead or sock.state != CONNECTED:
            return False
        if sock.is_stream:
            if len(data) > sock.tx_free():
                return False
        elif sum(len(d[0]) for d in sock.tx_dgrams) + len(data) > self.s.cfg.tx_buffer:
            return False
        return True

    async def prompt_send(self, sock: ModSocket, length: int | None, ip: str, port: int) -> Reply:
        s = self.s
        if self.term == b"\r":
            s.inbuf.drop_lf()
        async with s.out_lock:
            if self.emu._interleave:
                await s.write(BENIGN_URC)
            await s.write_prompt()
            data = await self.read_payload(length)
            result = self.send_result(sock, data, ip, port)
            await s.write_final(result)
        return Reply(final=None)

    def send_result(self, sock: ModSocket, data: bytes | None, ip: str, port: int) -> str:
        if data is None:
            return "OK"  # Esc: cancelled, nothing sent [inference: the manuals only say "cancel"]
        if len(data) > self.f.send_max:
            self.s.lasterr = self.f.code("invalid_param")
            return "ERROR"
        if sock.dead or sock.state != CONNECTED:
            self.s.lasterr = self.f.code("socket_closed")
            return "ERROR"
        if not data or not self.accept_send(sock, data):
            return "SEND FAIL"
        sock.queue_send(data, ip, port)
        return "SEND OK"

    async def h_QISENDEX(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+QISENDEX: {_range(self.f.connect_ids)},<hex_string>")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(2, 3 if self.f.qisendex == "id_hex_rai" else 2)
        cid = self.check_cid(cmd, 0)
        hexstr = cmd.str(1, maxlen=1024)
        if self.f.qisendex == "id_hex_rai":
            cmd.int(2, 0, 2, default=0)
        data = self.unhex(hexstr)
        sock = self.s.sockets.get(cid)
        if sock is None or sock.service in (LISTENER, SERVICE):
            return self.tcpip_error("socket_closed")
        result = self.send_result(sock, data, "", 0)
        if result == "ERROR":
            return Reply(final="ERROR")
        return Reply(final=result)

    @staticmethod
    def unhex(text: str) -> bytes:
        if len(text) % 2:
            raise BadParam("odd hex string")
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise BadParam("not hex") from None

    # ---- receiving ------------------------------------------------------------------------
    def qird_test(self) -> str:
        return f"+QIRD: {_range(self.f.connect_ids)},(0-{self.f.read_max})"

    def qird_block(self, header: str, data: bytes) -> bytes:
        data = self.render_recv(data)
        if self.s.qicfg.get("viewmode", [0])[0] == 1:
            return b"\r\n" + header.encode() + b"," + data + b"\r\n"
        return b"\r\n" + header.encode() + b"\r\n" + data + b"\r\n"

    async def h_QIRD(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(self.qird_test())
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 2)
        cid = self.check_cid(cmd, 0)
        sock = self.s.sockets.get(cid)
        if cmd.has(1) and cmd.int(1) == 0 and self.f.ack_query:
            if sock is None or sock.service == LISTENER:
                return self.tcpip_error("socket_closed")
            unread = sock.rx.size
            return self.ok(f"+QIRD: {sock.total_recv},{sock.have_read},{unread}")
        if self.injected_error("QIRD"):
            return self.error()
        if sock is None or sock.service == LISTENER:
            return self.tcpip_error("socket_closed")
        if sock.service == SERVICE:
            if cmd.has(1):
                cmd.int(1, 0, self.f.read_max)
            data, ip, port = sock.read(None)
            if not data:
                return self.ok("+QIRD: 0")
            return Reply([self.qird_block(f'+QIRD: {len(data)},"{ip}",{port}', data)])
        n = self.read_length(cmd, sock)
        data, _, _ = sock.read(n)
        if not data:
            return self.ok("+QIRD: 0")
        if self.emu._qird_fault is not None:
            return await self.faulty_qird(self.qird_header(sock, data), data)
        return Reply([self.qird_block(self.qird_header(sock, data), data)])

    def injected_error(self, name: str) -> bool:
        """Fault injection: this data command answers ERROR (Emulator.error_next)."""
        if self.emu._error_next[name] > 0:
            self.emu._error_next[name] -= 1
            return True
        return False

    async def faulty_qird(self, header: str, data: bytes) -> Reply:
        """Fault injection (Emulator.qird_fault): noise inside the payload, or a reset in it."""
        kind, self.emu._qird_fault = self.emu._qird_fault, None
        half = len(data) // 2
        if kind == "garbage":
            noisy = data[:half] + GARBAGE + data[half:]
            return Reply([b"\r\n" + header.encode() + b"\r\n" + noisy + b"\r\n"])
        async with self.s.out_lock:
            await self.s.write(b"\r\n" + header.encode() + b"\r\n" + data[:half])
        self.emu._reboot_soon(self.s)
        return Reply(final=None)

    def qird_header(self, sock: ModSocket, data: bytes) -> str:
        return f"+QIRD: {len(data)}"

    def read_length(self, cmd: Command, sock: ModSocket) -> int:
        if self.f.read_default is None and sock.service == UDP and self.f.name == "generic":
            return self.f.read_max  # "For UDP socket, the <read_length> should be ignored"
        if self.f.read_default is None:
            return cmd.int(1, 1, self.f.read_max)
        return cmd.int(1, 1, self.f.read_max, default=self.f.read_default)

    async def h_QISWTMD(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+QISWTMD: {_range(self.f.connect_ids)},(0-{max(self.f.access_modes)})")
        if cmd.kind == "read" and self.f.qiswtmd_read:
            return self.ok()
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(2, 2)
        cid = self.check_cid(cmd, 0)
        mode = cmd.int(1, 0, 2)
        if mode not in self.f.access_modes:
            raise BadParam("mode")
        sock = self.s.sockets.get(cid)
        if sock is None:
            return self.tcpip_error("socket_closed")
        if mode == 2:
            return self.tcpip_error("not_supported")
        old, sock.mode = sock.mode, mode
        if old == 1 and mode == 0:
            await self.s.pushes_written(sock)
        if old == 0 and mode == 1 and sock.rx.size:
            self.s.spawn(self._flush_to_push, sock)
        return self.ok()

    async def _flush_to_push(self, sock: ModSocket) -> None:
        while sock.rx.size and sock.mode == 1 and not sock.dead:
            n = None if sock.service == SERVICE else self.f.read_max
            data, ip, port = sock.read(n)
            await self.s.push_data(sock, data, ip, port)

    # ---- utilities ------------------------------------------------------------------------
    def active_ctx(self, cmd: Command, i: int):
        c = self.s.contexts.get(self.check_ctx(cmd, i))
        return c if c is not None and c.active else None

    async def h_QPING(self, cmd: Command) -> Reply:
        f = self.f
        if cmd.kind == "test":
            size = f",(32-{f.ping_size_max})" if f.ping_size_max else ""
            return self.ok(f"+QPING: {_range(f.context_ids)},<host>,(1-255),(1-10){size}")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(2, 5 if f.ping_size_max else 4)
        c = self.active_ctx(cmd, 0)
        host = cmd.str(1, maxlen=f.max_domain)
        timeout = cmd.int(2, 1, 255, default=f.ping_default_timeout)
        count = cmd.int(3, 1, 10, default=4)
        size = cmd.int(4, 32, f.ping_size_max, default=32) if f.ping_size_max else 32
        if c is None:
            return self.tcpip_error("pdp_broken")
        reply = self.ok()
        reply.after.append(lambda: self.s.spawn(self._ping, host, timeout, count, size))
        return reply

    async def _ping(self, host: str, timeout: int, count: int, size: int) -> None:
        f, s = self.f, self.s
        await trio.sleep(0)
        ip = self.resolve(host)
        if ip is None:
            s.urc(f"+QPING: {f.code('dns_failed')}")
            return
        times = []
        for _ in range(count):
            if is_loopback(ip):
                await trio.sleep(s.cfg.ping_rtt)
                ms = max(1, round(s.cfg.ping_rtt * 1000))
                times.append(ms)
                s.urc(f'+QPING: 0,"{ip}",{size},{ms},255')
            else:  # nothing ever leaves this machine: every request times out
                await trio.sleep(timeout)
                s.urc(f"+QPING: {f.ping_timeout_result}")
        rcvd = len(times)
        mn, mx = (min(times), max(times)) if times else (0, 0)
        avg = round(sum(times) / rcvd) if rcvd else 0
        s.urc(f"+QPING: {f.ping_final_ok},{count},{rcvd},{count - rcvd},{mn},{mx},{avg}")

    async def h_QNTP(self, cmd: Command) -> Reply:
        name = cmd.name
        if cmd.kind == "test":
            return self.ok(f"{name}: {_range(self.f.context_ids)},<server>,(1-65535),(0,1)")
        if cmd.kind == "read":
            if self.s.ntp_busy is None:
                return self.error()
            server, port = self.s.ntp_busy
            return self.ok(f'{name}: "{server}",{port}')
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(2, 4)
        c = self.active_ctx(cmd, 0)
        server = cmd.str(1, maxlen=self.f.max_domain)
        port = cmd.int(2, 1, 65535, default=123)
        cmd.int(3, 0, 1, default=1)
        if c is None:
            return self.tcpip_error("pdp_broken")
        if self.s.ntp_busy is not None:
            return self.tcpip_error("busy")
        self.s.ntp_busy = (server, port)
        reply = self.ok()
        reply.after.append(lambda: self.s.spawn(self._ntp, name, server))
        return reply

    h_QNTTP = h_QNTP

    async def _ntp(self, name: str, server: str) -> None:
        try:
            await trio.sleep(0.05)
            if self.resolve(server) is None:
                self.s.urc(f"{name}: {self.f.code('dns_failed')}")
                return
            now = _dt.datetime.now(_dt.timezone.utc)
            self.s.urc(now.strftime(f'{name}: 0,"%Y/%m/%d,%H:%M:%S+00"'))
        finally:
            self.s.ntp_busy = None

    async def h_QIDNSCFG(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+QIDNSCFG: {_range(self.f.context_ids)},<pridnsaddr>,<secdnsaddr>")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 3)
        c = self.active_ctx(cmd, 0)
        if c is None:
            return self.tcpip_error("pdp_broken")
        if len(cmd.args) == 1:
            return self.ok(f'+QIDNSCFG: {c.cid},"{c.dns[0]}","{c.dns[1]}"')
        pri = cmd.str(1)
        sec = cmd.str(2, default="::" if ":" in pri else "0.0.0.0")
        if not is_ip_literal(pri) or not is_ip_literal(sec):
            raise BadParam("dns address")
        if self.f.dnscfg_same_family and any(self.wrong_version(c, a) for a in (pri, sec)):
            raise BadParam("dns address of the other IP version")
        c.dns_set = (pri, sec)
        return self.ok()

    async def h_QIDNSGIP(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+QIDNSGIP: {_range(self.f.context_ids)},<hostname>")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(2, 2)
        c = self.active_ctx(cmd, 0)
        host = cmd.str(1, maxlen=self.f.max_domain)
        if not host:
            raise BadParam("host")
        if c is None:
            return self.tcpip_error("pdp_broken")
        reply = self.ok()
        reply.after.append(lambda: self.s.spawn(self._dnsgip, host))
        return reply

    async def _dnsgip(self, host: str) -> None:
        await trio.sleep(0)
        ip = self.resolve(host)
        if ip is None:
            code = self.f.code("dns_failed")
            self.s.lasterr = code
            self.s.urc(f'+QIURC: "dnsgip",{code}')
            return
        self.s.urc('+QIURC: "dnsgip",0,1,600')
        self.s.urc(f'+QIURC: "dnsgip","{ip}"')

    def qicfg_value(self, name: str) -> str:
        opt = self.f.qicfg[name]
        vals = self.s.qicfg[name]
        return ",".join(
            f'"{v}"' if spec == "str" else str(v) for spec, v in zip(opt.fields, vals, strict=True)
        )

    async def h_QICFG(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            lines = []
            for name, opt in self.f.qicfg.items():
                parts = []
                for spec in opt.fields:
                    if spec == "str":
                        parts.append("<string>")
                    elif len(spec) == 2 and spec[0] <= spec[1] and not (spec[0] == spec[1]):
                        parts.append(f"({spec[0]}-{spec[1]})")
                    else:
                        parts.append("(" + ",".join(str(v) for v in sorted(set(spec))) + ")")
                lines.append(f'+QICFG: "{name}",' + ",".join(parts))
            return self.ok(*lines)
        if cmd.kind != "write":
            return self.error()
        name = cmd.str(0).lower()
        opt = self.f.qicfg.get(name)
        if opt is None:
            raise BadParam("unknown option")
        given = [a for a in cmd.args[1:]]
        while given and given[-1].empty:
            given.pop()
        if not given:
            return self.ok(f'+QICFG: "{name}",{self.qicfg_value(name)}')
        need = opt.min_fields or len(opt.fields)
        if not need <= len(given) <= len(opt.fields):
            raise BadParam("number of values")
        vals = list(self.s.qicfg[name])
        for i, spec in enumerate(opt.fields[: len(given)]):
            if spec == "str":
                vals[i] = cmd.str(i + 1, maxlen=64)
            elif len(spec) == 2 and spec[0] != spec[1]:
                vals[i] = cmd.int(i + 1, spec[0], spec[1])
            else:
                v = cmd.int(i + 1)
                if v not in spec:
                    raise BadParam("value")
                vals[i] = v
        self.s.qicfg[name] = vals
        if self.f.qicfg_set_echoes:
            return self.ok(f'+QICFG: "{name}",{self.qicfg_value(name)}')
        return self.ok()

    async def h_QISDE(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok("+QISDE: (0,1)")
        if cmd.kind == "read":
            return self.ok(f"+QISDE: {self.s.qisde}")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 1)
        self.s.qisde = cmd.int(0, 0, 1)
        return self.ok()

    async def h_QIGETERROR(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok()
        if cmd.kind != "exec":
            return self.error()
        code = self.s.lasterr
        text = self.f.geterror_format.format(code=code, desc=self.f.describe(code))
        return self.ok(f"+QIGETERROR: {text}")


# ------------------------------------------------------------------------------------------
# family overrides


class Bc25Handlers(Handlers):
    """BC25/BC32 (manual 002): no QIACT (AT+CGACT), 512-byte limits, two-stage results."""

    protocol_type = 0  # QIOPEN's <protocol_type> of the command being handled

    def qiopen_extra(self, cmd: Command) -> int:
        self.protocol_type = cmd.int(7, 0, 1, default=0)  # 0 IPv4, 1 IPv6 (BC §2.1.1)
        if self.protocol_type == 1 and cmd.has(2) and cmd.str(2).upper() == LISTENER:
            raise BadParam("TCP LISTENER is not supported on IPv6")
        return 1

    def wrong_version(self, c, ip: str) -> bool:
        """BC25 opens the IP version <protocol_type> names, whatever the address is."""
        version = ipaddress.ip_address(ip).version
        return version != (6 if self.protocol_type == 1 else 4) or super().wrong_version(c, ip)

    def qiopen_test(self) -> str:
        return (
            f'+QIOPEN: {_range(self.f.context_ids)},{_range(self.f.connect_ids)},"TCP/UDP/TCP LISTENER/UDP SERVICE", '
            '"<IP_address>/<domain_name>",<remote_port>[,<local_port>[,(0-1)[,(0-1)]]]'
        )

    def qisend_test(self) -> str:
        return f'+QISEND: {_range(self.f.connect_ids)},(1-{self.f.send_max}),"<data>"'

    def qird_test(self) -> str:
        return f"+QIRD: {_range(self.f.connect_ids)},(1-{self.f.read_max})"

    def close_reply(self, cid: int) -> Reply:
        reply = self.ok()
        reply.stage2 = "CLOSE OK"
        return reply

    def qird_header(self, sock: ModSocket, data: bytes) -> str:
        if self.s.qicfg["showlength"][0] == 1:
            return f"+QIRD: {len(data)},{sock.rx.size}"
        return f"+QIRD: {len(data)}"

    def send_target(self, cid: int) -> ModSocket | None:
        sock = super().send_target(cid)
        if sock is not None and sock.service == SERVICE:
            return None  # "ERROR for TCP LISTENER / UDP SERVICE" (BC §2.1.4 note 2)
        return sock

    async def h_QISEND(self, cmd: Command) -> Reply:
        if cmd.kind == "write" and len(cmd.args) == 3:
            # inline data: AT+QISEND=<connectID>,<send_length>,<data>
            cid = self.check_cid(cmd, 0)
            length = cmd.int(1, 1, self.f.send_max)
            data = cmd.str(2).encode("latin-1")
            if len(data) != length:
                raise BadParam("length mismatch")
            sock = self.send_target(cid)
            if sock is None:
                return self.tcpip_error("socket_closed")
            result = self.send_result(sock, data, "", 0)
            if result == "ERROR":
                return Reply(final="ERROR")
            reply = self.ok()
            reply.stage2 = result
            return reply
        return await super().h_QISEND(cmd)

    async def prompt_send(self, sock: ModSocket, length: int | None, ip: str, port: int) -> Reply:
        s = self.s
        if self.term == b"\r":
            s.inbuf.drop_lf()
        async with s.out_lock:
            if self.emu._interleave:
                await s.write(BENIGN_URC)
            await s.write_prompt()
            data = await self.read_payload(length)
            result = self.send_result(sock, data, ip, port)
            if result in ("SEND OK", "SEND FAIL"):
                await s.write(frame("OK"))
                s.final_urc(result)  # second stage, right after this line
            else:
                await s.write_final(result)
        return Reply(final=None)

    async def h_QISENDEX(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(
                f'+QISENDEX: {_range(self.f.connect_ids)},(1-{self.f.send_max}),"<hex_string>"'
            )
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 3)
        cid = self.check_cid(cmd, 0)
        sock = self.send_target(cid)
        if len(cmd.args) == 3:
            length = cmd.int(1, 1, self.f.send_max)
            data = self.unhex(cmd.str(2, maxlen=2 * self.f.send_max))
            if len(data) != length:
                raise BadParam("length mismatch")
            if sock is None:
                return self.tcpip_error("socket_closed")
            result = self.send_result(sock, data, "", 0)
            if result == "ERROR":
                return Reply(final="ERROR")
            reply = self.ok()
            reply.stage2 = result
            return reply
        if sock is None:
            return self.tcpip_error("socket_closed")
        length = cmd.int(1, 1, self.f.send_max) * 2 if cmd.has(1) else None
        s = self.s
        if self.term == b"\r":
            s.inbuf.drop_lf()
        async with s.out_lock:
            await s.write_prompt()
            raw = await self.read_payload(length)
            try:
                data = None if raw is None else self.unhex(raw.decode("latin-1"))
            except BadParam:
                await s.write_final("ERROR")
                return Reply(final=None)
            result = self.send_result(sock, data, "", 0)
            if result in ("SEND OK", "SEND FAIL"):
                await s.write(frame("OK"))
                s.final_urc(result)
            else:
                await s.write_final(result)
        return Reply(final=None)

    async def h_QIDNSCFG(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok("+QIDNSCFG: <PrimaryDns>[,<SecondaryDns>]")
        if cmd.kind == "read":
            c = self.s.context(1)
            return self.ok(f'+QIDNSCFG: "{c.dns[0]}","{c.dns[1]}"')
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 2)
        if not self.s.registered:
            return self.tcpip_error("not_allowed")
        pri = cmd.str(0)
        sec = cmd.str(1, default="0.0.0.0")
        if not is_ip_literal(pri) or not is_ip_literal(sec):
            raise BadParam("dns address")
        for ctx in range(self.f.context_ids[0], self.f.context_ids[1] + 1):
            self.s.context(ctx).dns_set = (pri, sec)
        return self.ok()

    async def h_QIKALIVE(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok('+QIKALIVE: (0,1),(1-36000),(10-20),(1-10),"<keepalive_data>"')
        if cmd.kind == "read":
            return self.ok(f"+QIKALIVE: {self.s.qcfg.get('kalive', ['0,60,10,9'])[0]}")
        if cmd.kind != "write":
            return self.error()
        on = cmd.int(0, 0, 1)
        idle = cmd.int(1, 1, 36000, default=60)
        interval = cmd.int(2, 10, 20, default=10)
        count = cmd.int(3, 1, 10, default=9)
        self.s.qcfg["kalive"] = [f"{on},{idle},{interval},{count}"]
        return self.ok()


class Rg500uHandlers(Handlers):
    """RGx00U/RM500U (manual 004): QIACTEX/QIDEACTEX, dual-stack QIACT?, extra QIOPEN params."""

    def qiact_line(self, prefix: str, c) -> str:
        # both addresses of an IPv4v6 context, IPv6 in upper case (line-shapes D3, RU §2.3.3)
        if c.ctype == 3:
            return f'{prefix}: {c.cid},1,3,"{c.ip}","{c.ip6.upper()}"'
        if c.ctype == 2:
            return f'{prefix}: {c.cid},1,2,"{c.ip6.upper()}"'
        return f'{prefix}: {c.cid},1,1,"{c.ip}"'

    def qiopen_extra(self, cmd: Command) -> int:
        self.max_clients = cmd.int(7, 0, 11, default=11)  # <TCP_client_maxnum>
        if cmd.has(8):
            timeout = cmd.int(8, 0, 150)
            if 0 < timeout < 10:
                raise BadParam("connect_timeout")
        return 2

    def close_reply(self, cid: int) -> Reply:
        reply = self.ok()
        if self.s.qicfg["close/mode"][0] == 1:
            reply.after.append(lambda: self.s.urc(f'+QIURC: "closed",{cid}'))
        return reply

    async def prompt_send(self, sock: ModSocket, length: int | None, ip: str, port: int) -> Reply:
        if self.s.qicfg["sendinfo"][0] != 1 or sock.service == SERVICE:
            return await super().prompt_send(sock, length, ip, port)
        s = self.s
        if self.term == b"\r":
            s.inbuf.drop_lf()
        async with s.out_lock:
            await s.write_prompt()
            data = await self.read_payload(length)
            result = self.send_result(sock, data, ip, port)
            if result in ("SEND OK", "SEND FAIL"):
                status = 0 if result == "SEND OK" else 1
                free = min(sock.tx_free(), 10240)
                await s.write(frame(f"+QISEND: {sock.cid},{status},{free}"))
                await s.write_final("OK")
            else:
                await s.write_final(result)
        return Reply(final=None)

    async def h_QIACTEX(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+QIACTEX: {_range(self.f.context_ids)},(0,1)")
        if cmd.kind == "read":
            return self.ok(*[self.qiact_line("+QIACTEX", c) for c in self.s.active_contexts()])
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 2)
        c = self.s.context(self.check_ctx(cmd, 0))
        view = cmd.int(1, 0, 1, default=0)
        if c.active:
            return self.tcpip_error("pdp_already_active")
        reply = self.ok()
        reply.after.append(lambda: self.s.spawn(self._actex, c, view))
        return reply

    async def _actex(self, c, view: int) -> None:
        ok = await self._activate(c)
        if not ok:
            self.s.urc(f"+QIACTEX: {c.cid},{self.f.code('pdp_open')}")
        elif view:
            self.s.urc(self.qiact_line("+QIACTEX", c).replace(f"{c.cid},1,", f"{c.cid},0,", 1))
        else:
            self.s.urc(f"+QIACTEX: {c.cid},0")

    async def h_QIDEACTEX(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok(f"+QIDEACTEX: {_range(self.f.context_ids)}")
        if cmd.kind != "write":
            return self.error()
        cmd.nargs(1, 1)
        ctx = self.check_ctx(cmd, 0)
        reply = self.ok()

        async def deact() -> None:
            await trio.sleep(self.emu.cfg.qideact_delay)
            self.s.deactivate(ctx, forget=True)
            self.s.urc(f"+QIDEACTEX: {ctx},0")

        reply.after.append(lambda: self.s.spawn(deact))
        return reply


class GenericHandlers(Handlers):
    """The unnamed generic manual (001): QISTATE has no read form, no QISDE, IPv4 only."""

    async def h_QISTATE(self, cmd: Command) -> Reply:
        if cmd.kind in ("read", "exec"):
            return self.error()
        return await super().h_QISTATE(cmd)

    async def h_QIDEACT(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok()
        return await super().h_QIDEACT(cmd)

    async def h_QICLOSE(self, cmd: Command) -> Reply:
        if cmd.kind == "test":
            return self.ok()
        return await super().h_QICLOSE(cmd)


_HANDLERS: dict[str, type[Handlers]] = {
    "bc25": Bc25Handlers,
    "rg500u": Rg500uHandlers,
    "generic": GenericHandlers,
}


def handlers_for(session: Session) -> Handlers:
    return _HANDLERS.get(session.family.name, Handlers)(session)
