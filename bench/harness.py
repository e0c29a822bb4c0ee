"""The pieces bench/run.py is made of: the emulator and daemon processes, the loopback servers and
clients, a raw AT client, and the statistics.

Process layout (design rule of the benchmark issue): the emulator runs as one process
(`python -m modemd.emulator`, paced with --baud), the daemon as another (`python -m modemd.cli
--config ...`, exactly what systemd runs), and the clients and servers run in the bench's own trio
loop, except the small connection of the fairness figure (bench/echo_probe.py, a process of its own,
so that its latency does not include the bench loop's own queueing behind the bulk transfers). The
daemon's CPU time and RSS come from /proc/<pid>/stat and /proc/<pid>/status, so neither the emulator
nor the bench counts against it.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import time
import tty
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The byte stream every bulk transfer carries: a random block repeated. Receivers compare every
# chunk with it at the right offset, so a lost, duplicated or reordered byte is caught.
PATTERN_SIZE = 1 << 20
_pattern = random.Random(20240611).randbytes(PATTERN_SIZE)
PATTERN = _pattern + _pattern[: 1 << 17]  # any slice of up to 128 KiB needs no wrap
MAX_IO = 1 << 16

HDR = struct.Struct("!cIQ")  # kind, tag, size (0 = endless)
DOWN, UP, ECHO = b"D", b"U", b"E"


def pattern_at(offset: int, size: int) -> memoryview:
    start = offset % PATTERN_SIZE
    return memoryview(PATTERN)[start : start + size]


class Corrupted(Exception):
    pass


class Checker:
    """Follows a pattern stream: bytes, first/last arrival times, and content."""

    __slots__ = ("offset", "first", "last", "first_size", "marks")

    def __init__(self) -> None:
        self.offset = 0
        self.first = 0.0
        self.last = 0.0
        self.first_size = 0
        self.marks: list[tuple[float, int]] | None = None

    def feed(self, data: bytes, now: float) -> None:
        n = len(data)
        if pattern_at(self.offset, n) != data:
            raise Corrupted(f"stream differs from the pattern near byte {self.offset}")
        if not self.offset:
            self.first, self.first_size = now, n
        self.offset += n
        self.last = now
        if self.marks is not None:
            self.marks.append((now, self.offset))

    def goodput(self) -> float:
        """Bytes/s from the first to the last arrival (the first chunk marks the start)."""
        span = self.last - self.first
        return (self.offset - self.first_size) / span if span > 0 else 0.0

    def bytes_between(self, t0: float, t1: float) -> int:
        """Bytes that arrived within [t0, t1] (needs marks)."""
        assert self.marks is not None
        before = at_end = 0
        for t, off in self.marks:
            if t < t0:
                before = off
            if t <= t1:
                at_end = off
        return max(0, at_end - before)


# ---------------------------------------------------------------------------------------------
# statistics


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Spread:
    """min / median / max of several runs."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def min(self) -> float:
        return min(self.values) if self.values else math.nan

    @property
    def med(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    @property
    def max(self) -> float:
        return max(self.values) if self.values else math.nan

    def fmt(self, spec: str = ".3f", scale: float = 1.0) -> str:
        if not self.values:
            return "n/a"
        a, m, b = (v * scale for v in (self.min, self.med, self.max))
        if len(self.values) == 1:
            return format(m, spec)
        return f"{format(m, spec)} ({format(a, spec)}–{format(b, spec)})"


def jain(xs: Sequence[float]) -> float:
    s, q = sum(xs), sum(x * x for x in xs)
    return s * s / (len(xs) * q) if q else math.nan


# ---------------------------------------------------------------------------------------------
# processes


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port free now and never handed out before by this process: port 0 may give
    the same port twice, and a config with two listeners on one port is refused."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def python_env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("NOTIFY_SOCKET", None)
    return env


class ProcStats:
    """CPU seconds and memory of a process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def status(self, key: str) -> int:
        """A kB field of /proc/<pid>/status (VmRSS, VmHWM)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def rss_mb(self) -> float:
        return self.status("VmRSS") / 1024

    def hwm_mb(self) -> float:
        return self.status("VmHWM") / 1024

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux: clear_refs 5)."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False


class Emulator:
    """`python -m modemd.emulator` as a child process, driven through its control socket."""

    def __init__(self, tmp: Path, *, baud: int, turnaround: float = 0.0, qiact_delay: float = 0.5,
                 boot_delay: float = 0.2, family: str = "bg96") -> None:
        self.tmp = tmp
        self.tty = str(tmp / "tty")
        self.control_path = str(tmp / "emu.sock")
        self.args = [
            sys.executable, "-m", "modemd.emulator", "--tty-link", self.tty, "--family", family,
            "--baud", str(baud), "--turnaround", repr(turnaround), "--qiact-delay",
            repr(qiact_delay), "--boot-delay", repr(boot_delay), "--control", self.control_path,
        ]
        if os.environ.get("MODEMD_BENCH_EMU_CPROFILE"):  # profiling aid: cProfile output file
            self.args[1:1] = ["-m", "cProfile", "-o", os.environ["MODEMD_BENCH_EMU_CPROFILE"]]
        self.qiact_delay = qiact_delay
        self.boot_delay = boot_delay
        self.proc: trio.Process | None = None

    @asynccontextmanager
    async def running(self):
        async with trio.open_nursery() as nursery:
            self.proc = await nursery.start(partial(
                trio.run_process, self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                check=False, env=python_env(ROOT), cwd=str(ROOT),
            ))
            with trio.fail_after(15):
                while not (os.path.exists(self.tty) and os.path.exists(self.control_path)):
                    await trio.sleep(0.01)
            try:
                yield self
            finally:
                self.proc.terminate()
                with trio.move_on_after(5):
                    await self.proc.wait()
                self.proc.kill()

    async def control(self, line: str) -> str:
        stream = await trio.open_unix_socket(self.control_path)
        async with stream:
            await stream.send_all(line.encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                data = await stream.receive_some(4096)
                if not data:
                    break
                buf += data
        answer = buf.decode().strip()
        if not answer.startswith("ok"):
            raise RuntimeError(f"emulator control {line!r}: {answer}")
        return answer

    @property
    def stats(self) -> ProcStats:
        assert self.proc is not None
        return ProcStats(self.proc.pid)


def daemon_config(tmp: Path, emu: Emulator, server_port: int, listen_port: int,
                  probe: tuple[int, int] | None = None) -> str:
    """`probe`: (forward port, remote port) of a second forward for bench/echo_probe.py."""
    power = [sys.executable, "-m", "modemd.emulator.power", "--control", emu.control_path]
    extra = "" if probe is None else f"""
[[forward]]
name = "probe"
listen = "tcp:127.0.0.1:{probe[0]}"
remote = "127.0.0.1:{probe[1]}"
"""
    return f"""\
[modem]
port = "{emu.tty}"
model = "bg96"
lock_dir = "{tmp}"
health_interval = 3.0
health_timeout = 3.0   # short for the hang figure (kept at 3 s so its figures compare with earlier runs)

[pdp]
apn = "internet"

[power]
backend = "command"
off = {power + ["off"]!r}
on = {power + ["on"]!r}
supply_off_seconds = 0.5

[proxy]
linger_seconds = 1.0
{os.environ.get("MODEMD_BENCH_PROXY", "")}

[metrics]
listen = ""

[control]
socket = "{tmp}/modemd.sock"

[log]
level = "{os.environ.get("MODEMD_BENCH_LOG_LEVEL", "warning")}"

[[forward]]
name = "bench"
listen = "tcp:127.0.0.1:{listen_port}"
remote = "127.0.0.1:{server_port}"
{extra}""".replace("'", '"')


_compiled: set[Path] = set()


async def compile_installed(src: Path) -> None:
    """Byte-compile `src`'s modemd once per bench run, as the Debian package is at install time
    (dh_python3's py3compile): the daemon under test then loads .pyc files like a deployed one.
    Without them (a checkout under PYTHONDONTWRITEBYTECODE=1, as on the CI machine) every start
    compiles modemd from source: measured 1.7 MB more RSS after the imports, a slower start, and
    a tree with more docstrings would pay for its text in both."""
    if src in _compiled:
        return
    await trio.run_process([sys.executable, "-m", "compileall", "-q", str(src / "modemd")],
                           stdout=subprocess.DEVNULL)
    _compiled.add(src)


class Daemon:
    """`python -m modemd.cli --config FILE` as a child process, with a NOTIFY_SOCKET of our own,
    run from byte-compiled modules (`compile_installed`)."""

    def __init__(self, tmp: Path, src: Path, config: str) -> None:
        self.tmp = tmp
        self.src = src
        self.config_path = tmp / "modemd.toml"
        self.config_path.write_text(config)
        self.notify_path = str(tmp / "notify.sock")
        self.proc: trio.Process | None = None
        self.started = 0.0
        self.ready_at: float | None = None
        self.ready = trio.Event()
        self.on_start: Callable[[int], None] | None = None  # e.g. put the pid in a cgroup

    @asynccontextmanager
    async def running(self):
        try:
            os.unlink(self.notify_path)
        except FileNotFoundError:
            pass
        await compile_installed(self.src)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await sock.bind(self.notify_path)
        env = python_env(self.src)
        env["NOTIFY_SOCKET"] = self.notify_path
        args = [sys.executable, "-m", "modemd.cli", "--config", str(self.config_path)]
        if os.environ.get("MODEMD_BENCH_CPROFILE"):  # profiling aid: cProfile output file
            args[1:1] = ["-m", "cProfile", "-o", os.environ["MODEMD_BENCH_CPROFILE"]]
        if os.environ.get("MODEMD_BENCH_DAEMON_SCRIPT"):  # tracing aid: a wrapper around the cli
            args[1:3] = [os.environ["MODEMD_BENCH_DAEMON_SCRIPT"]]
        # MODEMD_BENCH_LOG=FILE keeps the daemon's log (warnings and up) after the run
        log = open(os.environ.get("MODEMD_BENCH_LOG") or self.tmp / "modemd.log", "ab")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._notifications, sock)
            self.started = time.perf_counter()
            self.proc = await nursery.start(partial(
                trio.run_process, args, stdout=subprocess.DEVNULL, stderr=log, check=False,
                env=env, cwd=str(self.src),
            ))
            if self.on_start is not None:
                self.on_start(self.proc.pid)
            try:
                with trio.fail_after(30):
                    await self.ready.wait()
                yield self
            finally:
                self.proc.terminate()
                with trio.move_on_after(10):
                    await self.proc.wait()
                self.proc.kill()
                nursery.cancel_scope.cancel()
                sock.close()
                log.close()

    async def _notifications(self, sock) -> None:
        while True:
            data = await sock.recv(4096)
            if b"READY=1" in data.split(b"\n") and self.ready_at is None:
                self.ready_at = time.perf_counter()
                self.ready.set()

    @property
    def stats(self) -> ProcStats:
        assert self.proc is not None
        return ProcStats(self.proc.pid)

    def check_source(self) -> None:
        """The daemon must run the code under test (PYTHONPATH beats the editable install)."""
        out = subprocess.run(
            [sys.executable, "-c", "import modemd; print(modemd.__file__)"],
            env=python_env(self.src), capture_output=True, text=True, check=True, cwd=self.src,
        ).stdout.strip()
        if not out.startswith(str(self.src)):
            raise SystemExit(f"daemon source {self.src} not used (imports {out})")


# ---------------------------------------------------------------------------------------------
# loopback servers ("the remote") and local clients


@dataclass
class UpResult:
    checker: Checker
    done: trio.Event


class Servers:
    """One listener speaking a tiny protocol: a header, then a download, upload or echo."""

    def __init__(self) -> None:
        self.uploads: dict[int, UpResult] = {}
        self.port = 0

    async def run(self, port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve, listeners)

    def expect_upload(self, tag: int) -> UpResult:
        result = self.uploads[tag] = UpResult(Checker(), trio.Event())
        return result

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                head = await receive_exactly(stream, HDR.size)
                kind, tag, size = HDR.unpack(head)
                if kind == DOWN:
                    await self._source(stream, size)
                elif kind == UP:
                    await self._sink(stream, self.uploads[tag])
                elif kind == ECHO:
                    while data := await stream.receive_some(MAX_IO):
                        await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError, Corrupted):
            pass

    async def _source(self, stream: trio.SocketStream, size: int) -> None:
        offset = 0
        while not size or offset < size:
            n = MAX_IO if not size else min(MAX_IO, size - offset)
            await stream.send_all(pattern_at(offset, n))
            offset += n
        await stream.send_eof()
        while await stream.receive_some(MAX_IO):
            pass

    async def _sink(self, stream: trio.SocketStream, result: UpResult) -> None:
        try:
            while data := await stream.receive_some(MAX_IO):
                result.checker.feed(data, time.perf_counter())
        finally:
            result.done.set()


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            raise trio.BrokenResourceError("EOF")
        buf += data
    return bytes(buf)


async def connect(port: int, kind: bytes, tag: int = 0, size: int = 0) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(HDR.pack(kind, tag, size))
    return stream


async def download(port: int, seconds: float | None, *, marks: bool = False,
                   stop: trio.Event | None = None) -> Checker:
    """Read an endless pattern stream for `seconds` from its first byte, or until `stop` is set."""
    checker = Checker()
    if marks:
        checker.marks = []
    stream = await connect(port, DOWN)
    try:
        deadline = math.inf
        no_data_by = time.perf_counter() + 30
        while time.perf_counter() < deadline and not (stop is not None and stop.is_set()):
            if not checker.offset and time.perf_counter() > no_data_by:
                raise Corrupted("download: no data within 30 s")
            with trio.move_on_after(0.5):
                data = await stream.receive_some(MAX_IO)
                if not data:
                    raise Corrupted("download ended early")
                checker.feed(data, time.perf_counter())
                if deadline == math.inf and seconds is not None:
                    deadline = checker.first + seconds
    finally:
        abort(stream)
    return checker


async def upload(port: int, servers: Servers, tag: int, seconds: float | None,
                 stop: trio.Event | None = None, size: int | None = None) -> Checker:
    """Send the pattern for `seconds`, `size` bytes or until `stop`; returns once the server has
    it all. (A paced upload is sized: the local socket buffers would otherwise queue many
    seconds of line time beyond the window.)"""
    result = servers.expect_upload(tag)
    stream = await connect(port, UP, tag)
    offset = 0
    end = time.perf_counter() + seconds if seconds is not None else math.inf
    size = size if size is not None else 1 << 62
    try:
        while (time.perf_counter() < end and offset < size
               and not (stop is not None and stop.is_set())):
            n = min(16384, size - offset)
            await stream.send_all(pattern_at(offset, n))
            offset += n
        with trio.fail_after(60):
            while result.checker.offset < offset and not result.done.is_set():
                await trio.sleep(0.005)
        if result.checker.offset != offset:
            raise Corrupted(f"upload: sent {offset}, the server got {result.checker.offset}")
    finally:
        abort(stream)
    return result.checker


def abort(stream: trio.SocketStream) -> None:
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    stream.socket.close()


class Echo:
    """A connection to the echo server: 64-byte request, wait for the whole response."""

    def __init__(self, stream: trio.SocketStream, size: int = 64) -> None:
        self.stream = stream
        self.msg = os.urandom(size)

    @classmethod
    async def open(cls, port: int, size: int = 64) -> Echo:
        echo = cls(await connect(port, ECHO), size)
        await echo.rtt()  # the module socket is open and warm
        return echo

    async def rtt(self) -> float:
        t0 = time.perf_counter()
        await self.stream.send_all(self.msg)
        got = 0
        while got < len(self.msg):
            data = await self.stream.receive_some(MAX_IO)
            if not data:
                raise Corrupted("echo connection closed")
            got += len(data)
        return time.perf_counter() - t0

    async def samples(self, n: int, gap: float = 0.0) -> list[float]:
        out = []
        for _ in range(n):
            out.append(await self.rtt())
            if gap:
                await trio.sleep(gap)
        return out

    def close(self) -> None:
        abort(self.stream)


async def wait_serving(port: int, timeout: float = 120.0, poll: float = 0.01) -> float:
    """perf_counter() when a 64-byte echo through the forward first succeeds."""
    with trio.fail_after(timeout):
        while True:
            try:
                with trio.move_on_after(2.0):
                    echo = await Echo.open(port)
                    echo.close()
                    return time.perf_counter()
            except (OSError, trio.BrokenResourceError, Corrupted):
                pass
            await trio.sleep(poll)


# ---------------------------------------------------------------------------------------------
# a raw AT client on the pty (no daemon): the emulator's own rate and the protocol's floor


class RawAt:
    """Minimal AT client: writes commands, splits the answer into lines and push payloads."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.buf = bytearray()
        self.arrivals: list[tuple[float, int]] | None = None

    def close(self) -> None:
        try:
            trio.lowlevel.notify_closing(self.fd)
        except RuntimeError:
            pass
        os.close(self.fd)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.fd)

    async def _fill(self) -> None:
        while True:
            try:
                data = os.read(self.fd, MAX_IO)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.fd)
                continue
            if self.arrivals is not None:
                self.arrivals.append((time.perf_counter(), len(data)))
            self.buf += data
            return

    async def line(self) -> str:
        while True:
            while self.buf[:1] in (b"\r", b"\n"):
                del self.buf[:1]
            end = min((i for i in (self.buf.find(b"\r"), self.buf.find(b"\n")) if i >= 0),
                      default=-1)
            if end >= 0 and (self.buf[end] == 0x0A or end + 1 < len(self.buf)):
                text = self.buf[:end].decode("latin-1")
                crlf = self.buf[end : end + 2] == b"\r\n"
                del self.buf[: end + (2 if crlf else 1)]
                return text
            await self._fill()

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def prompt(self) -> None:
        while True:
            while self.buf[:1] in (b"\r", b"\n"):
                del self.buf[:1]
            if self.buf[:1] == b">":
                del self.buf[: 2 if self.buf[1:2] == b" " else 1]
                return
            if self.buf and (b"\n" in self.buf or b"\r" in self.buf):
                raise RuntimeError(f"expected '>', got {await self.line()!r}")
            await self._fill()

    async def cmd(self, text: str, final: Sequence[str] = ("OK",), timeout: float = 10) -> list[str]:
        await self.write(text.encode() + b"\r")
        lines = []
        with trio.fail_after(timeout):
            while True:
                line = await self.line()
                if line == text:
                    continue  # echo
                if line in final or line == "ERROR" or line.startswith("+CME ERROR"):
                    if line not in final:
                        raise RuntimeError(f"{text}: {line}")
                    return lines
                lines.append(line)

    async def urc(self, prefix: str, timeout: float = 10) -> str:
        with trio.fail_after(timeout):
            while True:
                line = await self.line()
                if line.startswith(prefix):
                    return line

    async def push(self) -> bytes:
        """The payload of the next direct-push recv URC."""
        while True:
            line = await self.line()
            if line.startswith('+QIURC: "recv",'):
                size = int(line.split(",")[2])
                data = await self.exactly(size)
                return data

    async def setup(self, activate: bool = True) -> None:
        for _ in range(50):
            try:
                await self.cmd("ATE0", timeout=0.5)
                break
            except trio.TooSlowError:
                continue
        await self.cmd("AT+QISDE=0")
        if activate:
            active = await self.cmd("AT+QIACT?")
            if not any(line.startswith("+QIACT: 1,1") for line in active):
                await self.cmd('AT+QICSGP=1,1,"internet","","",0')
                await self.cmd("AT+QIACT=1", timeout=30)

    async def open_push(self, connect_id: int, port: int) -> None:
        await self.cmd(f'AT+QIOPEN=1,{connect_id},"TCP","127.0.0.1",{port},0,1')
        result = await self.urc("+QIOPEN:")
        if not result.endswith(",0"):
            raise RuntimeError(result)

    async def send(self, connect_id: int, data: bytes) -> None:
        await self.write(f"AT+QISEND={connect_id},{len(data)}\r".encode())
        await self.prompt()
        await self.write(data)
        while (line := await self.line()) != "SEND OK":
            if line in ("SEND FAIL", "ERROR"):
                raise RuntimeError(line)

    def sha(self) -> str:
        return hashlib.sha256(self.buf).hexdigest()
