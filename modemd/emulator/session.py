"""One power-on period of the emulated module: boot, command loop, URCs, sockets.

A new `Session` is made at every power-on; power-off cancels it and every real socket dies with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from . import atparse
from .families import CLOSING, Family
from .sockets import SERVICE, ModSocket

if TYPE_CHECKING:  # pragma: no cover
    from .core import Emulator

MAX_LINE = 2048  # longer command lines are discarded with ERROR
INPUT_LIMIT = 64 * 1024  # bytes buffered from the tty before the module stops reading it
BENIGN_URC = b'\r\n+QIND: "csq",24,99\r\n'


def frame(line: str | bytes) -> bytes:
    if isinstance(line, str):
        line = line.encode("latin-1")
    return b"\r\n" + line + b"\r\n"


class InputBuffer:
    """Bytes received from the daemon, consumed by the command loop (and by QISEND payloads)."""

    def __init__(self, limit: int = INPUT_LIMIT) -> None:
        self.buf = bytearray()
        self.limit = limit
        self._more = trio.Event()
        self._space = trio.Event()
        self._space.set()

    def feed(self, data: bytes) -> None:
        self.buf += data
        self._more.set()
        if len(self.buf) >= self.limit:
            self._space = trio.Event()

    def clear(self) -> None:
        self.buf.clear()
        self._space.set()

    async def wait_space(self) -> None:
        while len(self.buf) >= self.limit:
            await self._space.wait()

    def _consumed(self) -> None:
        if len(self.buf) < self.limit:
            self._space.set()

    async def _wait_more(self) -> None:
        self._more = trio.Event()
        await self._more.wait()

    async def read_line(self, max_len: int = MAX_LINE) -> tuple[bytes, bytes] | None:
        """(line, terminator); None when a line was longer than max_len (it is discarded)."""
        overflow = False
        while True:
            cr, lf = self.buf.find(b"\r"), self.buf.find(b"\n")
            cut = min(cr, lf) if cr >= 0 and lf >= 0 else max(cr, lf)
            if cut >= 0:
                term_len = 2 if self.buf[cut : cut + 2] == b"\r\n" else 1
                line = bytes(self.buf[:cut])
                term = bytes(self.buf[cut : cut + term_len])
                del self.buf[: cut + term_len]
                self._consumed()
                if overflow or len(line) > max_len:
                    return None
                return line, term
            if len(self.buf) > max_len:
                self.buf.clear()
                self._consumed()
                overflow = True
            await self._wait_more()

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._wait_more()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        self._consumed()
        return data

    async def read_until(self, stops: bytes, max_len: int) -> tuple[bytes, int]:
        """Bytes up to (not including) the first byte in `stops`, and that byte."""
        start = 0
        while True:
            hits = [i for i in (self.buf.find(bytes([b]), start) for b in stops) if i >= 0]
            if hits:
                i = min(hits)
                data = bytes(self.buf[:i])
                stop = self.buf[i]
                del self.buf[: i + 1]
                self._consumed()
                return data, stop
            start = len(self.buf)
            if start > max_len + 1:
                # keep consuming so the sender never blocks; the result will be an error
                data = bytes(self.buf)
                self.buf.clear()
                self._consumed()
                more, stop = await self.read_until(stops, 1 << 30)
                return data + more, stop
            await self._wait_more()

    def drop_lf(self) -> None:
        if self.buf[:1] == b"\n":
            del self.buf[:1]
            self._consumed()


@dataclass
class Context:
    cid: int
    ctype: int = 1
    apn: str = ""
    user: str = ""
    password: str = ""
    auth: int = 0
    active: bool = False
    dns_set: tuple[str, str] | None = None  # AT+QIDNSCFG; None: the network's servers

    @property
    def ip(self) -> str:
        return f"10.7.157.{self.cid}"

    @property
    def ip6(self) -> str:
        """The context's IPv6 address, from the documentation prefix 2001:db8::/32."""
        return f"2001:db8:7:157::{self.cid:x}"

    @property
    def versions(self) -> tuple[int, ...]:
        """IP versions the context carries (<context_type> 1 IPv4, 2 IPv6, 3 IPv4v6)."""
        return {1: (4,), 2: (6,), 3: (4, 6)}.get(self.ctype, (4,))

    @property
    def dns(self) -> tuple[str, str]:
        if self.dns_set is not None:
            return self.dns_set
        if self.ctype == 2:
            return ("2001:4860:4860::8888", "2001:4860:4860::8844")
        return ("8.8.8.8", "8.8.4.4")


@dataclass
class Reply:
    frames: list[bytes] = field(default_factory=list)
    final: str | None = "OK"  # None: the handler already wrote everything
    stage2: str | None = None  # two-stage families: the real final result, a URC after `final`
    after: list[Callable[[], object]] = field(default_factory=list)


class Session:
    def __init__(self, emu: Emulator) -> None:
        from .handlers import handlers_for

        self.emu = emu
        self.cfg = emu.cfg
        self.family: Family = emu.family
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.inbuf = InputBuffer()
        self.accepting = False  # booted: the UART takes commands
        self.boot = "normal"  # "silent": print nothing at boot, "nordy": the boot URCs but RDY
        self.stopping = False  # powering down: ignore everything
        self.nursery: trio.Nursery | None = None
        # (frame, set once it is on the line, the socket whose pushed data it carries)
        self._urcs: deque[tuple[bytes, trio.Event | None, ModSocket | None]] = deque()
        self._urc_ready = trio.Event()
        # module state
        self.echo = True
        self.cmee = 0
        self.reg_urc = {"+CREG": 0, "+CGREG": 0, "+CEREG": 0, "+C5GREG": 0}
        self.cops_format = 0  # AT+COPS=3,<format>: 0 long name, 2 numeric
        self.cfun = 1
        self.contexts: dict[int, Context] = {}
        self.sockets: dict[int, ModSocket] = {}
        self.qicfg = {name: list(opt.default) for name, opt in self.family.qicfg.items()}
        self.qisde = self.family.qisde_default or 0
        self.lasterr = 0
        self.ntp_busy: tuple[str, int] | None = None
        self.qcfg: dict[str, list[str]] = {}
        self.cgdcont: dict[int, tuple[str, str]] = {}
        self.handlers = handlers_for(self)
        # fault injection (Emulator.lose_command / lose_answer)
        self._glued = b""  # command text whose CR was lost: it prefixes the next command line
        self._loss: str | None = None  # the part of the current command's answer that is lost
        self._loss_task: trio.lowlevel.Task | None = None  # the task printing that answer

    # ---- helpers used by handlers and sockets ---------------------------------------------
    @property
    def registered(self) -> bool:
        return (self.emu._registered and self.cfun == 1 and self.emu.sim.ready
                and self.emu._reg_lost is None)

    def reg_stat(self) -> int:
        """<stat>: the radio's 1/5 while registered; while the network is lost, the loss's stat
        (2 searching, 3 denied, 0, 4); else 0."""
        if self.emu._reg_lost is not None and self.cfun == 1 and self.emu.sim.ready:
            return self.emu._reg_lost
        return self.emu.radio.stat if self.registered else 0

    def context(self, cid: int) -> Context:
        ctx = self.contexts.get(cid)
        if ctx is None:
            ctx = self.contexts[cid] = Context(cid)
        return ctx

    def active_contexts(self) -> list[Context]:
        return [c for c in sorted(self.contexts.values(), key=lambda c: c.cid) if c.active]

    def free_cid(self) -> int | None:
        lo, hi = self.family.connect_ids
        for cid in range(lo, hi + 1):
            if cid not in self.sockets:
                return cid
        return None

    def adopt(self, sock: ModSocket) -> None:
        self.sockets[sock.cid] = sock

    def forget(self, sock: ModSocket) -> None:
        if self.sockets.get(sock.cid) is sock:
            del self.sockets[sock.cid]

    def spawn(self, fn: Callable, *args) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(fn, *args)

    def kill_context_sockets(self, ctx: int, *, forget: bool) -> None:
        for sock in list(self.sockets.values()):
            if sock.ctx == ctx:
                sock.kill()
                sock.state = CLOSING
                if forget:
                    self.forget(sock)

    def deactivate(self, ctx: int, *, forget: bool) -> None:
        c = self.contexts.get(ctx)
        if c is not None:
            c.active = False
        self.kill_context_sockets(ctx, forget=forget)

    # ---- output ---------------------------------------------------------------------------
    @property
    def out_lock(self) -> trio.Lock:
        return self.emu._out_lock

    def _losing(self, *parts: str) -> bool:
        """The command being answered (by this task) has one of these parts of its answer lost."""
        return self._loss in parts and trio.lowlevel.current_task() is self._loss_task

    async def write(self, data: bytes, *, boundary: bool = True) -> None:
        """Write bytes (caller holds out_lock); dropped when hung or powered off. After a whole
        frame (CR LF ... CR LF) comes a line boundary, where real-module noise may go
        (`boundary=False`: bytes that only look like a frame, e.g. a QISDE payload echo)."""
        if self._losing("all"):
            return
        noise, extra = self.emu.noise, b""
        if boundary and noise.active and data[:2] == b"\r\n" and data[-2:] == b"\r\n":
            extra = noise.at_boundary()  # drawn now: the noise belongs to the frame written now
        await self.emu._write(data, self)
        if extra:
            await self.emu._write(extra, self)

    async def write_prompt(self) -> None:
        """The `> ` of a data command (caller holds out_lock)."""
        if self._losing("prompt"):
            return
        await self.write(b"\r\n> ")

    async def write_final(self, line: str) -> None:
        """A command's final result line (caller holds out_lock)."""
        if self._losing("final"):
            return
        await self.write(frame(line))

    def final_urc(self, line: str) -> None:
        """The second stage of a two-stage answer (BC25 SEND OK / CLOSE OK), right after the OK."""
        if self._losing("final", "all"):
            return
        self.urc(line)

    async def write_reply(
        self, frames: list[bytes], final: str | None, *, last: bool = True
    ) -> None:
        """Info frames and the final result (`last`: no second stage follows it)."""
        async with self.out_lock:
            for i, fr in enumerate(frames):
                if i and self.emu._interleave:
                    await self.write(BENIGN_URC)
                await self.write(fr)
            if final is not None:
                if frames and self.emu._interleave:
                    await self.write(BENIGN_URC)
                if last:
                    await self.write_final(final)
                else:
                    await self.write(frame(final))

    def urc(self, line: str | bytes) -> None:
        self.urc_frame(frame(line))

    def urc_frame(
        self, data: bytes, done: trio.Event | None = None, owner: ModSocket | None = None
    ) -> None:
        if self.stopping or self.emu._hung:
            if done is not None:
                done.set()
            return
        self._urcs.append((data, done, owner))
        self._urc_ready.set()

    def recv_urc(self, sock: ModSocket) -> None:
        """Buffer-mode "recv" URC (edge-triggered; the socket has already been disarmed)."""
        if self.emu._drop_recv > 0:
            self.emu._drop_recv -= 1
            return
        opt = self.family.recv_len_option
        if opt and self.qicfg.get(opt, [0])[0] == 1:
            self.urc(f'+QIURC: "recv",{sock.cid},{sock.rx.size}')
        else:
            self.urc(f'+QIURC: "recv",{sock.cid}')

    def push_frame(self, sock: ModSocket, data: bytes, ip: str, port: int) -> bytes:
        if sock.service == SERVICE:
            head = f'+QIURC: "recv",{sock.cid},{len(data)},"{ip}",{port}'
        else:
            head = f'+QIURC: "recv",{sock.cid},{len(data)}'
        data = self.handlers.render_recv(data)
        if self.emu._qird_fault == "garbage":  # fault injection: noise inside the pushed data
            from .handlers import GARBAGE

            self.emu._qird_fault = None
            data = data[: len(data) // 2] + GARBAGE + data[len(data) // 2 :]
        if self.qicfg.get("viewmode", [0])[0] == 1:
            return b"\r\n" + head.encode() + b"," + data + b"\r\n"
        return b"\r\n" + head.encode() + b"\r\n" + data + b"\r\n"

    async def push_data(self, sock: ModSocket, data: bytes, ip: str = "", port: int = 0) -> None:
        """Direct push mode: send the data in URCs and wait until they are on the line."""
        step = self.family.read_max
        sock.push_busy += 1
        if sock.push_busy == 1:
            sock.push_idle = trio.Event()
        try:
            for i in range(0, len(data), step):
                done = trio.Event()
                self.urc_frame(self.push_frame(sock, data[i : i + step], ip, port), done, sock)
                await done.wait()
        finally:
            sock.push_busy -= 1
            if not sock.push_busy:
                sock.push_idle.set()

    async def pushes_written(self, sock: ModSocket) -> None:
        """Until every push of `sock` that was under way is on the line (a module writes what
        it took from the socket before it answers a switch to buffer mode)."""
        while sock.push_busy:
            await sock.push_idle.wait()

    async def _urc_writer(self) -> None:
        while True:
            while not self._urcs:
                self._urc_ready = trio.Event()
                await self._urc_ready.wait()
            async with self.out_lock:
                # what is queued now goes out at this line boundary; URCs queued meanwhile wait
                # for the next turn, so a command's answer waiting for the line is not starved
                # by a stream of direct pushes (the lock is fair)
                for _ in range(len(self._urcs)):
                    if not self._urcs:
                        break
                    data, done, _ = self._urcs.popleft()
                    try:
                        await self.write(data)
                    finally:
                        if done is not None:
                            done.set()

    def drop_pushes(self, sock: ModSocket) -> None:
        """The host closed the socket: its pushed data still waiting for the line is discarded
        (no push for a connect_id follows the AT+QICLOSE answer)."""
        kept: deque[tuple[bytes, trio.Event | None, ModSocket | None]] = deque()
        for item in self._urcs:
            if item[2] is sock:
                if item[1] is not None:
                    item[1].set()
            else:
                kept.append(item)
        self._urcs = kept

    def drop_urcs(self) -> None:
        while self._urcs:
            _, done, _ = self._urcs.popleft()
            if done is not None:
                done.set()

    # ---- life cycle -----------------------------------------------------------------------
    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    task_status.started()
                    await trio.sleep(self.cfg.boot_delay)
                    self.inbuf.clear()
                    sim = self.emu.sim
                    sim.power_on()  # the card asks for its PIN again; its counters stay
                    self.accepting = True
                    nursery.start_soon(self._urc_writer)
                    for line in self.family.boot_urcs:
                        if self.boot == "silent" or (self.boot == "nordy" and line == "RDY"):
                            continue
                        if line.startswith("+CPIN:") and not sim.ready:
                            line = f"+CPIN: {sim.state}"  # SIM PIN / SIM PUK / NOT INSERTED
                            if sim.state in ("BLOCKED", "BUSY"):
                                continue
                        if line.startswith("+QIND:") and not sim.ready:
                            continue
                        self.urc(line)
                    nursery.start_soon(self._command_loop)
        finally:
            self.stopping = True
            self.accepting = False
            for sock in list(self.sockets.values()):
                sock.kill()
            self.sockets.clear()
            self.drop_urcs()
            self.inbuf.clear()  # wakes the pty reader if it waits for room in this buffer
            self.done.set()

    def feed(self, data: bytes) -> None:
        if self.accepting and not self.stopping:
            self.inbuf.feed(data)

    # ---- the command interpreter ----------------------------------------------------------
    async def _command_loop(self) -> None:
        while True:
            got = await self.inbuf.read_line(MAX_LINE)
            if self.stopping:
                continue
            if got is None:
                await self.write_reply([], "ERROR")
                continue
            line, term = got
            emu = self.emu
            if emu._lose_cmd:
                glue = emu._take_loss(emu._lose_cmd, line.decode("latin-1"))
                if glue is not None:  # lost on the line: never seen, or only its CR lost
                    emu._record_loss(f"command {line.decode('latin-1')}")
                    if glue:
                        self._glued += line
                    continue
            if self._glued:
                line, self._glued = self._glued + line, b""
            part = emu._take_loss(emu._lose_ans, line.decode("latin-1")) if emu._lose_ans else None
            if part is not None:
                emu._record_loss(f"{part} {line.decode('latin-1')}")
            if emu._reboot_on:
                boot = emu._take_loss(emu._reboot_on, line.decode("latin-1"))
                if boot is not None:  # restarts in the middle of this command
                    emu._record_loss(f"reboot {line.decode('latin-1')}")
                    if self.echo:
                        async with self.out_lock:
                            await self.write(line + term)
                    self.stopping = True  # takes nothing more: it is restarting
                    emu._reboot_soon(self, str(boot))
                    continue
            self._loss, self._loss_task = part, trio.lowlevel.current_task()
            try:
                await self._command(line, term)
            finally:
                self._loss = None

    async def _command(self, line: bytes, term: bytes) -> None:
        if self.echo:
            async with self.out_lock:
                await self.write(line + term)
        i = atparse.find_at(line)
        if i < 0:
            return  # empty line or line noise: modules stay silent
        text = line[i:].decode("latin-1")
        self.emu.commands.append(text)
        busy = self.emu._take_loss(self.emu._stall, text) if self.emu._stall else None
        if busy:  # input stays buffered meanwhile: later commands are answered after this one
            await trio.sleep(busy)
        if self.emu._turnaround:
            await trio.sleep(self.emu._turnaround)
        await self.execute(text[2:], term)

    async def execute(self, text: str, term: bytes) -> None:
        try:
            cmds = atparse.parse(text)
        except atparse.ParseError:
            await self.write_reply([], "ERROR")
            return
        frames: list[bytes] = []
        after: list[Callable[[], object]] = []
        final: str | None = "OK"
        stage2: str | None = None
        multi = len(cmds) > 1
        for cmd in cmds:
            reply = await self.handlers.dispatch(cmd, multi=multi, term=term)
            if reply.final is None:
                return  # the handler did its own output (prompt commands)
            frames += reply.frames
            after += reply.after
            final, stage2 = reply.final, reply.stage2
            if final != "OK":
                break
        await self.write_reply(frames, final, last=stage2 is None)
        if stage2 is not None:
            self.final_urc(stage2)
        for fn in after:
            fn()
