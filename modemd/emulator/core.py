"""The `Emulator`: a simulated Quectel module on a pty, with fault injection."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from .config import DEFAULT_HOSTS, EmulatorConfig, check_hosts
from .control import open_control_socket, serve_control
from .families import FAMILIES, Family
from .line import Line
from .noise import Noise, check_range
from .pty import Pty
from .radio import RadioConditions
from .session import Session
from .sim import Sim

LOSS_PARTS = ("all", "prompt", "final")
BOOT_KINDS = (
    "silent",
    "nordy",
)  # Emulator.reboot_during: nothing at boot / the boot URCs but RDY  # Emulator.lose_answer: which part of the answer is lost
PACED_READ = 4096  # bytes taken from the pty at a time while the line is paced
STOP_DRAIN = 0.2  # s a power-down waits for the bytes already queued on the line


class Emulator:
    """A simulated module. Make one with `async with Emulator.open(cfg) as emu:`."""

    def __init__(self, cfg: EmulatorConfig) -> None:
        self.cfg = cfg
        self.family: Family = FAMILIES[cfg.family]
        self.commands: list[str] = []
        self._pty: Pty | None = None
        self._nursery: trio.Nursery | None = None
        self._session: Session | None = None
        self._out_lock = trio.Lock()
        self._power_lock = trio.Lock()
        self._hung = False
        self._interleave = False
        self._baud = cfg.baud
        self._turnaround = float(cfg.turnaround)
        self._qiact_delay = float(cfg.qiact_delay)
        self._hosts = dict(cfg.hosts)
        # the SIM card outlives every power-on (its attempt counters are on the card)
        self.sim = Sim(inserted=cfg.sim_ready, locked=cfg.sim_locked, pin=cfg.sim_pin,
                       puk=cfg.sim_puk)
        self._registered = cfg.registered
        self.radio = RadioConditions()
        self._reg_lost: int | None = None  # <stat> while the network is lost (lose_registration)
        self._reg_generation = 0
        self._send_fail = 0
        self._drop_recv = 0
        self._qiact_fail = 0
        self._qideact_fail = 0
        self._open_fail: list[int] = []  # result codes for the next +QIOPEN URCs
        self._error_next = {"QISEND": 0, "QIRD": 0}  # data commands to answer ERROR
        self._qird_fault: str | None = None  # "garbage" | "reset": mangle the next QIRD payload
        # lost on the line: [pattern, count left, glue] / [pattern, count left, part]
        self._lose_cmd: list[list] = []
        self._lose_ans: list[list] = []
        self._reboot_on: list[list] = []  # [pattern, count left, boot kind]
        self._stall: list[list] = []  # busy before answering: [pattern, count left, seconds]
        self.lost: list[str] = []  # what was lost, for tests: "command <line>", "<part> <line>"
        self.lost_at: list[float] = []  # time.monotonic() of each (comparable across processes)
        self.noise = Noise()
        self.boots = 0  # power-ons so far (every reboot included)
        self._inject_q: list[bytes] = []
        self._inject_ready = trio.Event()
        # the UART: module -> host (tx) and host -> module (rx), each paced at the line rate
        self._tx = Line(self._deliver_out, lambda: self.rate, self._fragment_max)
        self._rx = Line(self._deliver_in, lambda: self.rate)

    # ---- life cycle -----------------------------------------------------------------------
    @classmethod
    @asynccontextmanager
    async def open(cls, cfg: EmulatorConfig | None = None) -> AsyncIterator[Emulator]:
        emu = cls(cfg if cfg is not None else EmulatorConfig())
        control_sock = None
        if emu.cfg.control:
            control_sock = open_control_socket(emu.cfg.control)  # ConfigError, before anything
        try:
            emu._pty = Pty()
        except BaseException:
            if control_sock is not None:
                control_sock.close()
            raise
        body_exc: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                emu._nursery = nursery
                nursery.start_soon(emu._tx.run)
                nursery.start_soon(emu._rx.run)
                nursery.start_soon(emu._pty_reader)
                nursery.start_soon(emu._injector)
                if control_sock is not None:
                    await nursery.start(serve_control, emu, control_sock, emu.cfg.control)
                if emu.cfg.power_on:
                    await emu._start_session()
                try:
                    yield emu
                except Exception as exc:  # re-raised below, not wrapped in an ExceptionGroup
                    body_exc = exc
                finally:
                    nursery.cancel_scope.cancel()
            if body_exc is not None:
                raise body_exc
        finally:
            if emu._session is not None:
                for sock in list(emu._session.sockets.values()):
                    sock.kill()
                emu._session = None
            emu._pty.close()

    @property
    def tty_path(self) -> str:
        assert self._pty is not None
        return self._pty.path

    @property
    def powered(self) -> bool:
        return self._session is not None

    @property
    def rate(self) -> float:
        """Line rate in bytes/s (0 = unlimited)."""
        return self._baud / 10

    # ---- power ----------------------------------------------------------------------------
    async def _start_session(self, boot: str = "normal") -> None:
        assert self._nursery is not None
        session = Session(self)
        session.boot = boot
        self.boots += 1
        self._session = session
        self._hung = False
        await self._nursery.start(session.run)

    async def _stop_session(self) -> None:
        session = self._session
        if session is None:
            return
        session.stopping = True
        with trio.move_on_after(STOP_DRAIN):  # what is already in the UART's FIFO still goes out
            await self._tx.drain()
        self._session = None
        session.scope.cancel()
        await session.done.wait()

    async def power_off(self) -> None:
        """Cut the power: no output, every socket gone, silent until power_on()."""
        async with self._power_lock:
            await self._stop_session()
            self._hung = False

    async def power_on(self) -> None:
        """Power on (a power cycle if already on): boots again with RDY and the boot URCs."""
        async with self._power_lock:
            await self._stop_session()
            await self._start_session()

    async def pwrkey(self) -> None:
        """A PWRKEY pulse: boots a module that is off; a running module powers down normally."""
        async with self._power_lock:
            session = self._session
            if session is None:
                await self._start_session()
                return
            if not self._hung:
                # the session keeps running until the line is free: a QISEND waiting for its
                # payload (it holds the line) must still get it, or both would wait forever
                async with self._out_lock:
                    session.stopping = True
                    session.drop_urcs()
                    await self._write(b"\r\nPOWERED DOWN\r\n", session)
            session.stopping = True
            await self._stop_session()

    def _power_down_soon(self, session: Session) -> None:
        """AT+QPOWD: the session has said goodbye; end it from outside."""

        async def down() -> None:
            async with self._power_lock:
                if self._session is session:
                    await self._stop_session()

        assert self._nursery is not None
        self._nursery.start_soon(down)

    def _reboot_soon(self, session: Session, boot: str = "normal") -> None:
        """AT+CFUN=1,1: restart the module (`boot`: "normal", or a silent reboot's kind)."""

        async def reboot() -> None:
            async with self._power_lock:
                if self._session is session:
                    await self._stop_session()
                    await self._start_session(boot)

        assert self._nursery is not None
        self._nursery.start_soon(reboot)

    # ---- the line -------------------------------------------------------------------------
    async def _write(self, data: bytes, session: Session | None, *, force: bool = False) -> None:
        """Write to the tty at line rate; dropped unless `session` is the live one and not hung."""
        await self._tx.send(data, (session, force))

    async def _deliver_out(self, chunk: memoryview, tag: tuple[Session | None, bool]) -> None:
        """Bytes that crossed the line towards the host (checked now: a hang or power cut between
        queueing and arrival loses them, as the module's UART would)."""
        session, force = tag
        if force or (session is not None and session is self._session and not self._hung):
            assert self._pty is not None
            for piece in self.noise.pieces(chunk):  # each piece a write, a checkpoint after it
                await self._pty.write_all(piece)

    def _fragment_max(self) -> int | None:
        """Fragmented output crosses the line a piece at a time (see Line)."""
        return self.noise.fragment[1] if self.noise.fragment else None

    async def _pty_reader(self) -> None:
        """What the host wrote crosses the line (paced) before the session sees it."""
        assert self._pty is not None
        while True:
            data = await self._pty.read_some(PACED_READ if self.rate else 65536)
            await self._rx.send(data)

    async def _deliver_in(self, chunk: memoryview, tag: object) -> None:
        session = self._session
        if session is None or self._hung:
            return  # powered off or hung: the bytes are lost
        await session.inbuf.wait_space()  # cleared (so woken) when the session ends
        if session is self._session and not self._hung:
            session.feed(bytes(chunk))

    async def _injector(self) -> None:
        while True:
            while not self._inject_q:
                self._inject_ready = trio.Event()
                await self._inject_ready.wait()
            data = self._inject_q.pop(0)
            async with self._out_lock:
                await self._write(data, None, force=True)

    # ---- fault injection & knobs ----------------------------------------------------------
    def hang(self, on: bool = True) -> None:
        """Stop answering anything (input is read and dropped, no output) until hang(False)."""
        self._hung = bool(on)
        session = self._session
        if session is not None and on:
            session.inbuf.clear()
            session.drop_urcs()

    def pdp_deactivate(self, context_id: int = 1) -> None:
        """The network drops the context: +QIURC: "pdpdeact",<ctx>; its sockets die (closing)."""
        session = self._session
        if session is None:
            return
        session.deactivate(context_id, forget=False)
        if self.family.pdpdeact_urc:
            session.urc(f'+QIURC: "pdpdeact",{context_id}')

    def remote_close(self, connect_id: int) -> None:
        """The peer closes: the real socket is closed and the module reports "closed"."""
        session = self._session
        sock = session.sockets.get(connect_id) if session is not None else None
        if sock is None:
            raise LookupError(f"no socket with connect_id {connect_id}")
        sock.take_pending()
        sock.kill()
        sock.peer_closed()

    def send_fail(self, count: int = 1) -> None:
        """The next `count` sends answer SEND FAIL (their data is consumed and dropped)."""
        self._send_fail = max(0, int(count))

    def drop_recv_urc(self, count: int = 1) -> None:
        """The next `count` buffer-mode "recv" URCs are not sent."""
        self._drop_recv = max(0, int(count))

    def qiact_fail(self, count: int = 1) -> None:
        """The next `count` activations (AT+QIACT/CGACT/QIACTEX) fail after qiact_delay."""
        self._qiact_fail = max(0, int(count))

    def qideact_fail(self, count: int = 1) -> None:
        """The next `count` AT+QIDEACT answer ERROR (561-class "close PDP context failed")."""
        self._qideact_fail = max(0, int(count))

    def open_fail(self, code: int, count: int = 1) -> None:
        """The next `count` AT+QIOPEN answer OK and then `+QIOPEN: <id>,<code>` (the ID is failed)."""
        if not isinstance(code, int) or not 0 < code < 1000:
            raise ValueError(f"result code must be an integer 1-999, got {code!r}")
        self._open_fail += [code] * max(0, int(count))

    def error_next(self, command: str, count: int = 1) -> None:
        """The next `count` data commands `command` ("QISEND" with data, "QIRD" with a length
        or none; never the `,0` queries) answer ERROR before touching any data."""
        name = command.upper().removeprefix("AT+")
        if name not in self._error_next:
            raise ValueError(f"expected QISEND or QIRD, got {command!r}")
        self._error_next[name] = max(0, int(count))

    def qird_fault(self, kind: str | None) -> None:
        """Mangle the next non-empty QIRD answer: "garbage" inserts a few noise bytes in the middle
        of its payload (the header's length stays, so the payload overruns; a direct-push URC gets
        the same if it comes first); "reset" stops after half of the payload and reboots the
        module (RDY follows). None: cancel."""
        if kind not in (None, "garbage", "reset"):
            raise ValueError(f"expected garbage or reset, got {kind!r}")
        self._qird_fault = kind

    def lose_command(self, pattern: str, count: int = 1, glue: bool = False) -> None:
        """The next `count` command lines whose text (without its CR) re.fullmatch `pattern` are
        lost on the line. glue=False: the module never sees the line (no echo, no answer).
        glue=True: only its CR is lost, so its text is glued in front of the next command line,
        which the module then parses whole (usually ERROR). count=0 cancels `pattern`."""
        regex = _regex(pattern)
        self._lose_cmd = [r for r in self._lose_cmd if r[0].pattern != pattern]
        if _count(count):
            self._lose_cmd.append([regex, _count(count), bool(glue)])

    def lose_answer(self, pattern: str, count: int = 1, part: str = "all") -> None:
        """The module executes the next `count` command lines that re.fullmatch `pattern`, but
        part of what it prints for them never reaches the host: "prompt" (the `> ` of a QISEND:
        the module is in data mode, waiting for the payload), "final" (the final result line
        only: SEND OK / OK / CLOSE OK, the second stage on two-stage families), "all" (every
        byte printed for the command: echo, info lines, a +QIRD payload, the final result).
        URCs the command triggers later (+QIOPEN: ...) are not part of the answer. count=0
        cancels `pattern`."""
        if part not in LOSS_PARTS:
            raise ValueError(f"part must be one of {', '.join(LOSS_PARTS)}, got {part!r}")
        regex = _regex(pattern)
        self._lose_ans = [r for r in self._lose_ans if r[0].pattern != pattern]
        if _count(count):
            self._lose_ans.append([regex, _count(count), part])

    def _record_loss(self, what: str) -> None:
        self.lost.append(what)
        self.lost_at.append(time.monotonic())  # for a benchmark in another process, not a timer

    def _take_loss(self, rules: list[list], line: str) -> object | None:
        """The third field of the first rule matching `line` (one of its count used), or None."""
        for rule in rules:
            if rule[0].fullmatch(line):
                rule[1] -= 1
                if not rule[1]:
                    rules.remove(rule)
                return rule[2]
        return None

    def stall(self, pattern: str, seconds: float, count: int = 1) -> None:
        """The module is busy for `seconds` before it answers the next `count` command lines that
        re.fullmatch `pattern` (a real module's slow moment, or a host starved of CPU): the answer
        comes late, whole and in order; later command lines are buffered and answered after it,
        each in its turn (with `set_turnaround` a late probe's answer comes later still).
        count=0 cancels `pattern`."""
        regex = _regex(pattern)
        self._stall = [r for r in self._stall if r[0].pattern != pattern]
        if _count(count):
            self._stall.append([regex, _count(count), _nonneg("stall", seconds)])

    def reboot_during(self, pattern: str, boot: str = "silent", count: int = 1) -> None:
        """The next `count` command lines that re.fullmatch `pattern` make the module restart in
        the middle of the command: it takes the line (echoes it if echo is on), never answers it,
        and boots again with its sockets and contexts gone and echo on (ATE1) until the host
        sends ATE0. boot="silent": nothing is printed at boot; "nordy": the boot URCs without RDY
        (RDY lost). Counted in `boots`. count=0 cancels `pattern`."""
        if boot not in BOOT_KINDS:
            raise ValueError(f"boot must be one of {', '.join(BOOT_KINDS)}, got {boot!r}")
        regex = _regex(pattern)
        self._reboot_on = [r for r in self._reboot_on if r[0].pattern != pattern]
        if _count(count):
            self._reboot_on.append([regex, _count(count), boot])

    # ---- real-module noise (see noise.py) ---------------------------------------------------
    def noise_urcs(self, every: int) -> None:
        """One line boundary of the module's output in `every` (drawn from the seed) gets an
        unsolicited real-module line (noise.REAL_URCS). 0: off."""
        self.noise.urc_every = _count(every)

    def noise_fragment(self, lo: int | None, hi: int | None = None) -> None:
        """Everything the module prints reaches the pty in pieces of lo..hi bytes (sizes drawn
        from the seed), each a separate write with a trio checkpoint after it, so the host's
        reads see splits (inside lines, between CR and LF). None: off."""
        if lo is None:
            self.noise.fragment = None
            return
        hi = lo if hi is None else hi
        check_range(lo, hi)
        self.noise.fragment = (lo, hi)

    def noise_garbage(self, n: int) -> None:
        """`n` junk bytes (any byte but CR, LF and `>`, drawn from the seed) at the next line
        boundary of the module's output: one junk line, glued to the next line's CR LF."""
        self.noise.garbage += _count(n)

    def noise_garble(self, flip: int = 0, glue: int = 0) -> None:
        """At the next `flip` line boundaries, an unsolicited real-module line with one byte
        flipped; at the next `glue` boundaries, two such lines printed as one (their CR LF lost).
        The module's own answers are never touched (losing them is lose_answer's job)."""
        self.noise.flip += _count(flip)
        self.noise.glue += _count(glue)

    def send_fail_rate(self, rate: float) -> None:
        """This share (0-1, drawn from the noise seed) of QISENDs answers SEND FAIL (the data is
        consumed and dropped), on top of send_fail(count)."""
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"SEND FAIL rate must be between 0 and 1, got {rate!r}")
        self.noise.send_fail_rate = float(rate)

    def noise_seed(self, seed: int) -> None:
        """Restart every noise draw from `seed` (the default seed is 0)."""
        if not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.noise.reseed(seed)

    def noise_off(self) -> None:
        """No more noise; pending garbage / flip / glue and silent reboots are dropped."""
        self.noise.off()
        self._reboot_on = []

    def inject(self, data: bytes) -> None:
        """Write raw bytes to the tty as soon as the line is free (between frames)."""
        self._inject_q.append(bytes(data))
        self._inject_ready.set()

    def interleave_urcs(self, on: bool = True) -> None:
        """Put a harmless URC between the lines of multi-line responses and before prompts."""
        self._interleave = bool(on)

    def set_qiact_delay(self, seconds: float) -> None:
        self._qiact_delay = _nonneg("qiact_delay", seconds)

    def set_turnaround(self, seconds: float) -> None:
        self._turnaround = _nonneg("turnaround", seconds)

    def set_baud(self, baud: int) -> None:
        if not isinstance(baud, int) or baud < 0:
            raise ValueError(f"baud must be an integer >= 0, got {baud!r}")
        self._baud = baud

    def set_hosts(self, hosts: dict[str, str]) -> None:
        """Replace the DNS map (loopback targets only; localhost stays)."""
        self._hosts = {**DEFAULT_HOSTS, **check_hosts(hosts)}

    def set_sim_ready(self, ready: bool) -> None:
        """Insert (True) or remove (False) the SIM card. A running module says so at once, as
        with SIM hot-plug detection on (`+CPIN: NOT INSERTED`; an inserted card starts up and
        reports its state, `+CPIN: READY` or `SIM PIN`), and a card pulled takes every active
        context (`pdpdeact`, sockets dead) and the registration with it."""
        if self.sim.inserted == bool(ready):
            return
        session = self._session
        was_registered = session.registered if session is not None else None
        self.sim.inserted = bool(ready)
        if ready:
            self.sim.power_on()  # a card just inserted asks for its PIN again
        if session is None:
            return
        session.urc(f"+CPIN: {self.sim.state}")
        if not ready:
            for ctx in [cid for cid, c in session.contexts.items() if c.active]:
                self.pdp_deactivate(ctx)
        if session.registered != was_registered:
            session.handlers.registration_changed()

    def set_sim_busy(self, busy: bool) -> None:
        """A SIM that stays busy (+CME ERROR: 14) until cleared: it never gets ready."""
        self.sim.busy = bool(busy)

    def set_sim(self, *, locked: bool | None = None, pin: str | None = None,
                puk: str | None = None) -> None:
        """Set up the card: its PIN lock, PIN and PUK (the attempt counters are kept)."""
        from .sim import check_code

        sim = self.sim
        if pin is not None:
            sim.pin = check_code("pin", pin, 4, 8)
        if puk is not None:
            sim.puk = check_code("puk", puk, 8, 8)
        if locked is not None:
            sim.locked = bool(locked)

    def set_registered(self, registered: bool) -> None:
        """Network registration on/off; emits +CREG/+CGREG/+CEREG URCs where enabled."""
        session = self._session
        was = session.registered if session is not None else None
        self._registered = bool(registered)
        if session is not None and was != session.registered:
            if not session.registered:
                for ctx in list(session.contexts):
                    session.deactivate(ctx, forget=False)
            session.handlers.registration_changed()

    def set_radio(self, **values) -> None:
        """Signal, operator, registration details (emulator/radio.py RadioConditions); a new
        registration <stat> (1 home, 5 roaming) is reported at once."""
        before = self._session.reg_stat() if self._session is not None else None
        self.radio.set(**values)
        session = self._session
        if session is not None and session.reg_stat() != before:
            session.handlers.registration_changed()

    def lose_registration(self, stat: int = 2, pdpdeact_after: float | None = ...) -> None:
        """The network is lost while serving: <stat> 2 (searching), 3 (denied), 0 or 4 in every
        registration URC enabled. The PDP context stays up unless `pdpdeact_after` (default: the
        radio's setting) says the network drops it that many seconds later."""
        if stat in (1, 5):
            raise ValueError("a lost registration has <stat> 0, 2, 3 or 4")
        if pdpdeact_after is ...:
            pdpdeact_after = self.radio.pdpdeact_after
        session = self._session
        before = session.reg_stat() if session is not None else None
        self._reg_lost = stat
        self._reg_generation += 1
        if session is None:
            return
        if session.reg_stat() != before:
            session.handlers.registration_changed()
        if pdpdeact_after is not None and self._nursery is not None:
            self._nursery.start_soon(self._drop_contexts_later, pdpdeact_after, self._reg_generation)

    def regain_registration(self) -> None:
        """The network is back: registration URCs with the radio's <stat> (1 or 5)."""
        session = self._session
        before = session.reg_stat() if session is not None else None
        self._reg_lost = None
        self._reg_generation += 1
        if session is not None and session.reg_stat() != before:
            session.handlers.registration_changed()

    async def _drop_contexts_later(self, seconds: float, generation: int) -> None:
        await trio.sleep(seconds)
        session = self._session
        if session is None or generation != self._reg_generation or self._reg_lost is None:
            return
        for ctx in [c.cid for c in session.active_contexts()]:
            self.pdp_deactivate(ctx)

    def module_listen_port(self, module_port: int) -> int:
        """The real loopback port behind a TCP LISTENER / UDP SERVICE opened at module port P."""
        session = self._session
        if session is not None:
            for sock in session.sockets.values():
                if sock.local_port == module_port and sock.real_port and not sock.dead:
                    return sock.real_port
        raise LookupError(f"no TCP LISTENER or UDP SERVICE at module port {module_port}")

    def context_info(self, context_id: int) -> dict | None:
        """What the last AT+QICSGP set for a context, and whether it is active (for tests); None
        when this power-on has not touched the context."""
        session = self._session
        c = session.contexts.get(context_id) if session is not None else None
        if c is None:
            return None
        return {"context_type": c.ctype, "apn": c.apn, "username": c.user, "password": c.password,
                "auth": c.auth, "active": c.active}

    def socket_info(self, connect_id: int) -> dict | None:
        """A snapshot of one module socket (for tests), None if the connect_id is free."""
        session = self._session
        sock = session.sockets.get(connect_id) if session is not None else None
        if sock is None:
            return None
        return {
            "service": sock.service,
            "state": sock.state,
            "mode": sock.mode,
            "rx_buffered": sock.rx.size,
            "tx_backlog": len(sock.tx),
            "total_sent": sock.total_sent,
            "total_recv": sock.total_recv,
            "real_port": sock.real_port,
        }


def _regex(pattern: str) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"expected a regular expression, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None


def _count(count: int) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    return count


def _nonneg(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)
