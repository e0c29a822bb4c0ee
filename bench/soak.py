#!/usr/bin/env python3
"""Soak: the real daemon under connection churn and random faults; its RSS and open fds over time.

    .venv/bin/python bench/soak.py --minutes 30              # writes bench/results/soak-<stamp>.md
    .venv/bin/python bench/soak.py --minutes 2 --fault-every 10 --sample 2

Three processes: the emulator (`python -m modemd.emulator --control SOCK`, paced at --baud), the daemon
(`python -m modemd.cli --config FILE` on the emulator's tty, power backend `command` switching the
emulator through its control socket), and this driver. The driver runs a loopback echo server, --workers
churning clients (TCP forward, unix forward and SOCKS5 CONNECT, in turn) and a fault injector that every
--fault-every s (+-1/3 jitter) picks one of: pdpdeact, hang (the daemon must detect it and power-cycle),
power cycle (unsolicited RDY), POWERED DOWN, remote close of a live connection, a SEND FAIL storm, dropped
recv URCs. Every --sample s it reads the daemon's VmRSS and the number of entries in /proc/PID/fd.

Each client sends a random payload (1 KB .. 256 KB), half-closes, and reads the echo to EOF. Outcomes:
ok (echo identical), reset (ECONNRESET at any point: the abnormal end the data promise requires),
refused (SOCKS reply != 0), short_eof (clean EOF, echo a strict prefix: on TCP and SOCKS clients only
legitimate after a remote close injected on that path; a unix client also sees an abnormal end as EOF,
Linux has no reset for AF_UNIX), corrupt (echo not a prefix of what was sent: must be 0).

Verdict: after a warm-up (--warmup s), RSS and fds are "flat" when the median of the last quarter of
the samples is within --tolerance % of the median of the first quarter (fds: or within --fd-slack
descriptors, since a few client connections are open at any sample). The run stops by itself after
--minutes, stops the daemon with SIGTERM (and times the exit), and writes the report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from harness import free_port  # bench/ is on sys.path: this runs as a script from it

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FAULTS = ("pdpdeact", "hang", "power_cycle", "powered_down", "remote_close", "send_fail",
          "drop_recv")


PATH_OF_FORWARD = {"echo": "tcp", "echounix": "unix", "socks": "socks"}  # forward label -> client


def toml_list(argv: list[str]) -> str:
    return "[" + ", ".join(json.dumps(a) for a in argv) + "]"


def write_config(tmp: Path, tty: str, emu_control: str, echo_port: int) -> dict:
    ports = {"fwd": free_port(), "socks": free_port(), "metrics": free_port()}
    hook = [PY, "-m", "modemd.emulator.power", "--control", emu_control]
    (tmp / "modemd.toml").write_text(f"""
[modem]
port = "{tty}"
model = "bg96"
lock_dir = "{tmp}"
health_interval = 5.0
health_timeout = 2.0
[pdp]
apn = "internet"
[power]
backend = "command"
off = {toml_list(hook + ["off"])}
on = {toml_list(hook + ["on"])}
supply_off_seconds = 1.0
[supervisor]
healthy_reset_seconds = 15.0
reconcile_interval = 2.0
[[forward]]
name = "echo"
listen = "tcp:127.0.0.1:{ports['fwd']}"
remote = "127.0.0.1:{echo_port}"
[[forward]]
name = "echounix"
listen = "unix:{tmp}/echo.sock"
remote = "127.0.0.1:{echo_port}"
[socks]
listen = "tcp:127.0.0.1:{ports['socks']}"
[proxy]
queue_timeout = 10.0
linger_seconds = 2.0
[metrics]
listen = "127.0.0.1:{ports['metrics']}"
[control]
socket = "{tmp}/control.sock"
""")
    return ports


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    state: str
    done: int


@dataclass
class Soak:
    args: argparse.Namespace
    tmp: Path
    ports: dict = field(default_factory=dict)
    echo_port: int = 0
    daemon: subprocess.Popen | None = None
    emulator: subprocess.Popen | None = None
    outcomes: Counter = field(default_factory=Counter)
    faults: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    bytes_verified: int = 0
    start: float = 0.0
    state: str = "?"
    exit_seconds: float | None = None
    exit_code: int | None = None
    busy: int = 0
    connect_errors: list = field(default_factory=list)
    remote_closed: Counter = field(default_factory=Counter)  # client path -> injected closes
    emu_obj: Any = None
    not_serving_since: float | None = None
    dumped: bool = False
    workers_done: trio.Event = field(default_factory=trio.Event)

    # -- processes ------------------------------------------------------------------------------
    async def run_emulator(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """--emulator-in-driver: the emulator as tasks of this process (it can be inspected)."""
        from modemd.emulator import Emulator, EmulatorConfig

        cfg = EmulatorConfig(family="bg96", baud=self.args.baud, boot_delay=0.3, qiact_delay=0.3,
                             control=str(self.tmp / "emu.sock"))
        async with Emulator.open(cfg) as emu:
            os.symlink(emu.tty_path, self.tmp / "tty")
            task_status.started(emu)
            await trio.sleep_forever()

    def start_processes(self) -> None:
        tmp = self.tmp
        link, control = str(tmp / "tty"), str(tmp / "emu.sock")
        if self.args.emulator_in_driver:
            self.start_daemon(link, control)
            return
        self.emulator = subprocess.Popen(
            [PY, "-m", "modemd.emulator", "--tty-link", link, "--control", control,
             "--profile", "bg96", "--baud", str(self.args.baud), "--boot-delay", "0.3",
             "--qiact-delay", "0.3"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "emulator.log", "w"),  # noqa: SIM115
            cwd=ROOT,
        )
        deadline = time.monotonic() + 20
        while not (os.path.exists(link) and os.path.exists(control)):
            if time.monotonic() > deadline or self.emulator.poll() is not None:
                raise SystemExit("the emulator did not start; see " + str(tmp / "emulator.log"))
            time.sleep(0.05)
        self.start_daemon(link, control)

    def start_daemon(self, link: str, control: str) -> None:
        tmp = self.tmp
        self.ports = write_config(tmp, link, control, self.echo_port)
        self.daemon = subprocess.Popen(
            [PY, "-m", "modemd.cli", "--config", str(tmp / "modemd.toml")],
            stdout=open(tmp / "daemon.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=ROOT,
        )

    def emu(self, line: str) -> str:
        from modemd.emulator.control import send_control

        try:
            return send_control(str(self.tmp / "emu.sock"), line, timeout=10)
        except OSError as exc:
            return f"error {exc}"

    def ctl(self, cmd: str) -> object:
        """One request to the daemon's control socket (JSON lines); None on any failure."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(self.tmp / "control.sock"))
                s.sendall(json.dumps({"v": 1, "id": 1, "cmd": cmd}).encode() + b"\n")
                buf = b""
                while b"\n" not in buf:
                    data = s.recv(65536)
                    if not data:
                        return None
                    buf += data
            answer = json.loads(buf.split(b"\n", 1)[0])
            return answer.get("result") if answer.get("ok") else None
        except (OSError, ValueError):
            return None

    # -- echo server ----------------------------------------------------------------------------
    async def echo(self, stream: trio.SocketStream) -> None:
        try:
            async for data in stream:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    # -- clients --------------------------------------------------------------------------------
    async def connect(self, kind: str) -> trio.SocketStream | None:
        if kind == "unix":
            return await trio.open_unix_socket(str(self.tmp / "echo.sock"))
        if kind == "tcp":
            return await trio.open_tcp_stream("127.0.0.1", self.ports["fwd"])
        stream = await trio.open_tcp_stream("127.0.0.1", self.ports["socks"])
        await stream.send_all(b"\x05\x01\x00")
        if await recv_exactly(stream, 2) != b"\x05\x00":
            await stream.aclose()
            return None
        await stream.send_all(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                              + struct.pack(">H", self.echo_port))
        head = await recv_exactly(stream, 10)
        if len(head) < 10 or head[1] != 0:
            await stream.aclose()
            return None
        return stream

    async def one(self, rng: random.Random, kind: str) -> str:
        size = int(2 ** rng.uniform(10, 18))
        data = rng.randbytes(size)
        try:
            with trio.fail_after(self.args.client_timeout):
                stream = await self.connect(kind)
                if stream is None:
                    return "refused"
                async with stream:
                    got = bytearray()
                    send_error: list[BaseException] = []

                    async def send() -> None:
                        # a reset seen by send() is consumed there: the next recv() reads EOF
                        try:
                            await stream.send_all(data)
                            await stream.send_eof()
                        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                            send_error.append(exc)

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(send)
                        while chunk := await stream.receive_some(65536):
                            got += chunk
        except BaseException as exc:  # noqa: BLE001 - classify the leaf of trio's groups
            leaf = exc
            while getattr(leaf, "exceptions", None):
                leaf = leaf.exceptions[0]
            if isinstance(leaf, trio.TooSlowError):
                return "timeout"
            if isinstance(leaf, (trio.BrokenResourceError, ConnectionResetError, BrokenPipeError)):
                return "reset"
            if isinstance(leaf, OSError):
                self.outcomes[f"errno:{leaf.errno}"] += 1
                text = f"{kind}: {leaf!r} (cause {leaf.__cause__!r})"[:300]
                if len(self.connect_errors) < 5 and text not in self.connect_errors:
                    self.connect_errors.append(text)
                return "connect_error"
            raise
        if send_error and bytes(got) != data:
            return "reset"
        if bytes(got) == data:
            self.bytes_verified += 2 * size
            return "ok"
        if data.startswith(bytes(got)):
            return "short_eof"
        return "corrupt"

    async def worker(self, index: int, stop_at: float) -> None:
        rng = random.Random(self.args.seed * 1000 + index)
        kinds = ("tcp", "unix", "socks")
        n = index
        self.busy += 1
        try:
            while trio.current_time() < stop_at:
                kind = kinds[n % 3]
                n += 1
                outcome = await self.one(rng, kind)
                self.outcomes[outcome] += 1
                self.outcomes[f"{kind}:{outcome}"] += 1
                # a refused client retries after a short back-off, as a well-behaved one would
                pause = self.args.pause if outcome == "ok" else max(self.args.pause, 0.5)
                await trio.sleep(rng.uniform(0.0, pause))
        finally:
            self.busy -= 1
            if not self.busy:
                self.workers_done.set()

    async def interrupted(self, scope: trio.CancelScope) -> None:
        """SIGINT/SIGTERM end the run early (the report is still written)."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                print("interrupted: stopping early", flush=True)
                scope.cancel()
                return

    # -- faults ---------------------------------------------------------------------------------
    async def injector(self, stop_at: float) -> None:
        rng = random.Random(self.args.seed)
        every = self.args.fault_every
        while True:
            await trio.sleep(rng.uniform(every * 2 / 3, every * 4 / 3))
            if trio.current_time() > stop_at - every:  # leave the last stretch fault-free
                return
            kind = rng.choice(self.args.faults)
            detail = await trio.to_thread.run_sync(self.inject, kind, rng)
            self.faults.append((round(trio.current_time() - self.start, 1), kind, detail))
            print(f"  {self.faults[-1][0]:8.1f} s  fault {kind}: {detail}", flush=True)
            if kind == "hang":
                await trio.sleep(30)
                status = await trio.to_thread.run_sync(self.emu, "status")
                if "hung=1" in status:
                    await trio.to_thread.run_sync(self.emu, "hang off")
                    self.faults.append((round(trio.current_time() - self.start, 1), "hang",
                                        "NOT recovered by the daemon within 30 s; released"))

    def inject(self, kind: str, rng: random.Random) -> str:
        if kind == "pdpdeact":
            return self.emu("pdpdeact 1")
        if kind == "hang":
            return self.emu("hang on")
        if kind == "power_cycle":
            return self.emu("power on")
        if kind == "powered_down":
            return self.emu("power pwrkey")
        if kind == "send_fail":
            return self.emu(f"sendfail {rng.randint(5, 50)}")
        if kind == "drop_recv":
            return self.emu(f"droprecv {rng.randint(1, 5)}")
        rows = [r for r in self.ctl("connections") or [] if r.get("state") == "open"]
        if not rows:
            return "no open connection"
        row = rng.choice(rows)
        path = PATH_OF_FORWARD.get(row.get("forward"), "?")
        self.remote_closed[path] += 1
        return f"connect_id {row['connect_id']} ({path}): " + self.emu(f"close {row['connect_id']}")

    # -- sampling -------------------------------------------------------------------------------
    async def sampler(self, stop_at: float) -> None:
        assert self.daemon is not None
        pid = self.daemon.pid
        print(f"{'t/s':>8} {'rss/KiB':>8} {'fds':>5} {'state':>12} {'clients':>8}", flush=True)
        while True:
            status = await trio.to_thread.run_sync(self.ctl, "status")
            if isinstance(status, dict):
                self.state = status.get("state", "?")
            self.watch_wedge()
            s = Sample(round(trio.current_time() - self.start, 1), rss_kb(pid), fd_count(pid),
                       self.state, sum(v for k, v in self.outcomes.items() if ":" not in k))
            self.samples.append(s)
            print(f"{s.t:8.1f} {s.rss_kb:8d} {s.fds:5d} {s.state:>12} {s.done:8d}", flush=True)
            if self.daemon.poll() is not None:
                raise SystemExit(f"the daemon exited ({self.daemon.returncode}); see "
                                 f"{self.tmp / 'daemon.log'}")
            if trio.current_time() >= stop_at:
                return
            await trio.sleep(min(self.args.sample, max(0.0, stop_at - trio.current_time())))

    def watch_wedge(self) -> None:
        """Not serving for 60 s: dump the in-driver emulator's tasks once (diagnosis)."""
        now = trio.current_time()
        if self.state == "serving":
            self.not_serving_since = None
            return
        if self.not_serving_since is None:
            self.not_serving_since = now
        if now - self.not_serving_since < 60 or self.dumped or self.emu_obj is None:
            return
        self.dumped = True
        emu = self.emu_obj
        text = dump_tasks()
        text += f"\nrx line {emu._rx.queued} queued, tx line {emu._tx.queued} queued"
        session = emu._session
        text += (f"\nout_lock {emu._out_lock.statistics()}\npower_lock {emu._power_lock.statistics()}"
                 f"\nsession {session} stopping={getattr(session, 'stopping', None)} "
                 f"accepting={getattr(session, 'accepting', None)} "
                 f"inbuf={bytes(session.inbuf.buf[:200]) if session else None}"
                 f"\nlast commands {emu.commands[-12:]}")
        (self.tmp / "wedge.txt").write_text(text)
        print("not serving for 60 s; emulator tasks:\n" + text, flush=True)

    # -- the run --------------------------------------------------------------------------------
    async def run(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.echo_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self.echo, listeners)
            if self.args.emulator_in_driver:
                self.emu_obj = await nursery.start(self.run_emulator)
            await trio.to_thread.run_sync(self.start_processes)
            with trio.fail_after(60):
                while (await trio.to_thread.run_sync(self.ctl, "status") or {}).get(
                        "state") != "serving":
                    await trio.sleep(0.5)
            self.start = trio.current_time()
            stop_at = self.start + self.args.minutes * 60
            print(f"daemon pid {self.daemon.pid} serving; soak for {self.args.minutes:g} min "
                  f"(tmp {self.tmp})", flush=True)
            # the clients still busy at stop_at get 30 s more, then are cancelled
            with trio.move_on_at(stop_at + 30):
                async with trio.open_nursery() as work:
                    work.start_soon(self.interrupted, work.cancel_scope)
                    work.start_soon(self.sampler, stop_at)
                    work.start_soon(self.injector, stop_at)
                    for i in range(self.args.workers):
                        work.start_soon(self.worker, i, stop_at)
                    await trio.sleep_until(stop_at)
                    await self.workers_done.wait()
                    work.cancel_scope.cancel()
            await trio.to_thread.run_sync(self.stop_processes)
            nursery.cancel_scope.cancel()

    def stop_processes(self) -> None:
        assert self.daemon is not None
        t0 = time.monotonic()
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.daemon.wait(60)
            self.exit_seconds = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
        if self.emulator is None:
            return
        self.emulator.send_signal(signal.SIGTERM)
        try:
            self.emulator.wait(10)
        except subprocess.TimeoutExpired:
            self.emulator.kill()
            self.emulator.wait()


def dump_tasks() -> str:
    """Every task with the chain of awaits it is blocked in (diagnosis of a stall)."""
    from modemd.diagnostics import task_tree

    return task_tree()


async def recv_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            break
        buf += data
    return bytes(buf)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def quarters(samples: list[Sample], warmup: float) -> tuple[list[Sample], list[Sample]]:
    body = [s for s in samples if s.t >= warmup] or samples
    q = max(1, len(body) // 4)
    return body[:q], body[-q:]


def verdict(soak: Soak) -> tuple[dict, bool]:
    args = soak.args
    first, last = quarters(soak.samples, args.warmup)
    out = {}
    flat = True
    for key, slack in (("rss_kb", 0), ("fds", args.fd_slack)):
        a = statistics.median(getattr(s, key) for s in first)
        b = statistics.median(getattr(s, key) for s in last)
        change = (b - a) / a * 100 if a else 0.0
        ok = abs(b - a) <= max(a * args.tolerance / 100, slack)
        out[key] = (a, b, change, ok)
        flat &= ok
    return out, flat


def data_promise(soak: Soak) -> tuple[bool, str]:
    """Kept: nothing corrupt, and on TCP and SOCKS clients no more short clean EOFs than remote
    closes injected on that path (every other abnormal end must be a reset). Unix clients cannot
    be sent a reset (docs/reliability.md, "Limitation: unix-socket clients"): their short EOFs
    beyond the remote closes are abnormal ends they see as EOF, counted but not a breach."""
    o, closed = soak.outcomes, soak.remote_closed
    strict = [(p, o[f"{p}:short_eof"], closed[p]) for p in ("tcp", "socks")]
    ok = o["corrupt"] == 0 and all(eofs <= closes for _, eofs, closes in strict)
    unix_extra = max(0, o["unix:short_eof"] - closed["unix"])
    text = "; ".join([
        f"corrupt {o['corrupt']}",
        *(f"{p} short clean EOFs {eofs} <= remote closes on {p} {closes}" for p, eofs, closes in strict),
        f"unix short EOFs {o['unix:short_eof']}, remote closes on unix {closed['unix']}: "
        f"{unix_extra} abnormal end(s) seen as EOF (no reset for AF_UNIX)",
    ])
    return ok, text


def report(soak: Soak) -> str:
    args = soak.args
    res, flat = verdict(soak)
    o = soak.outcomes
    total = sum(v for k, v in o.items() if ":" not in k)
    fault_kinds = Counter(k for _, k, _ in soak.faults)
    log = (soak.tmp / "daemon.log").read_text(errors="replace")
    tracebacks = log.count("Traceback")
    data_ok, data_text = data_promise(soak)
    duration = soak.samples[-1].t if soak.samples else 0.0
    lines = [
        f"# modemd soak, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        "",
        f"`bench/soak.py --minutes {args.minutes:g} --workers {args.workers} --baud {args.baud} "
        f"--fault-every {args.fault_every:g} --sample {args.sample:g} --seed {args.seed}`",
        "",
        f"- duration: {duration / 60:.1f} min of churn and faults ({len(soak.samples)} samples)",
        f"- verdict: **{'FLAT' if flat else 'NOT FLAT'}** (last-quarter median within "
        f"{args.tolerance:g} % of first-quarter median, after {args.warmup:g} s warm-up; "
        f"fds also within {args.fd_slack})",
    ]
    for key, label in (("rss_kb", "RSS KiB"), ("fds", "open fds")):
        a, b, change, ok = res[key]
        lines.append(f"- {label}: first quarter {a:g}, last quarter {b:g} ({change:+.1f} %) "
                     f"{'flat' if ok else 'GROWING'}")
    rss = [s.rss_kb for s in soak.samples]
    fds = [s.fds for s in soak.samples]
    lines += [
        f"- RSS min/max {min(rss)}/{max(rss)} KiB; fds min/max {min(fds)}/{max(fds)}",
        f"- clients: {total} ({', '.join(f'{k} {v}' for k, v in sorted(o.items()) if ':' not in k)})",
        f"- by path: {', '.join(f'{k} {v}' for k, v in sorted(o.items()) if ':' in k)}",
        f"- bytes moved and verified (echo identical, both directions): {soak.bytes_verified:,}",
        f"- data promise: **{'kept' if data_ok else 'BROKEN'}** ({data_text})",
        f"- faults injected: {len(soak.faults)} ({', '.join(f'{k} {v}' for k, v in sorted(fault_kinds.items()))})",
        f"- daemon log: {tracebacks} tracebacks; SIGTERM exit code {soak.exit_code} after "
        f"{soak.exit_seconds if soak.exit_seconds is None else round(soak.exit_seconds, 2)} s",
        "",
        *[f"- connect error seen: `{e}`" for e in soak.connect_errors],
        "",
        "| t (s) | RSS (KiB) | open fds | state | clients done |",
        "|---:|---:|---:|---|---:|",
    ]
    step = max(1, len(soak.samples) // 60)
    shown = soak.samples[::step]
    if soak.samples and shown[-1] is not soak.samples[-1]:
        shown.append(soak.samples[-1])
    lines += [f"| {s.t:.0f} | {s.rss_kb} | {s.fds} | {s.state} | {s.done} |" for s in shown]
    lines += ["", "## Faults", "", "| t (s) | fault | answer |", "|---:|---|---|"]
    lines += [f"| {t} | {k} | {d} |" for t, k, d in soak.faults]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=4, help="concurrent churning clients")
    p.add_argument("--baud", type=int, default=921600, help="emulated line rate (0 = unlimited)")
    p.add_argument("--fault-every", type=float, default=40.0, metavar="S")
    p.add_argument("--sample", type=float, default=5.0, metavar="S")
    p.add_argument("--pause", type=float, default=0.2, metavar="S",
                   help="a worker waits up to this long between connections")
    p.add_argument("--client-timeout", type=float, default=120.0, metavar="S")
    p.add_argument("--tolerance", type=float, default=10.0, metavar="PERCENT")
    p.add_argument("--fd-slack", type=int, default=4)
    p.add_argument("--warmup", type=float, default=None, metavar="S",
                   help="samples before this are not judged (default: 5 %% of the run, >= 30 s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"comma-separated subset of {','.join(FAULTS)}")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--emulator-in-driver", action="store_true",
                   help="run the emulator inside this process (its tasks are dumped on a wedge)")
    p.add_argument("--keep-log", metavar="FILE", help="copy the daemon's log here at the end")
    args = p.parse_args()
    args.faults = [f for f in args.faults.split(",") if f]
    if unknown := set(args.faults) - set(FAULTS):
        p.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    if args.warmup is None:
        args.warmup = max(30.0, args.minutes * 60 * 0.05)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="modemd-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            trio.run(soak.run)
        finally:
            for proc in (soak.daemon, soak.emulator):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
        text = report(soak)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.md"
        path.write_text(text)
        if args.keep_log:
            log = (Path(tmp) / "daemon.log").read_text(errors="replace")
            Path(args.keep_log).write_text(log)
    print(text)
    print(f"report: {path}")
    _, flat = verdict(soak)
    data_ok, _ = data_promise(soak)
    return 0 if flat and data_ok else 1


if __name__ == "__main__":
    sys.exit(main())
