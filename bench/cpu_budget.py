"""The "cpu-budget" section of bench/run.py (issue 16): the daemon alone under a CPU quota.

A small gateway's ARM core runs CPython about ten times slower than one core here; a CPU quota on
the daemon's process (and on nothing else: the emulator, the loopback servers and the clients run
unconstrained) stands in for it. `Quota` finds the machine's mechanism: cgroup v2 `cpu.max`, cgroup
v1 `cpu.cfs_quota_us` (100 ms period both), else `systemd-run --scope -p CPUQuota=` is named as
unavailable here (it would have to start the daemon itself, under a running systemd).

Each round measures every quota point in turn (unconstrained first), so the noise of a shared
machine spreads over the points instead of landing on one; goodput is reported as a ratio of the
same round's unconstrained figure. CPU-seconds per MB come from /proc/<pid>/stat (robust to other
load on the machine); task switches from /proc/<pid>/task/*/schedstat.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio
from harness import (
    ECHO,
    MAX_IO,
    Checker,
    Corrupted,
    Daemon,
    Echo,
    Emulator,
    Servers,
    Spread,
    abort,
    connect,
    daemon_config,
    download,
    free_port,
    pattern_at,
    pct,
    upload,
    wait_serving,
)

BAUD = 921600
LINE = BAUD / 10
POINTS = (None, 5.0, 2.5, 1.5)  # % of one core; None: no quota
PERIOD_US = 100_000
MIX_BULK = 11


def progress(text: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Quota:
    """One cgroup holding only the daemon; `set(percent)` changes its CPU quota."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.kind = "none"
        self.why = ""
        name = f"modemd-bench-{os.getpid()}"
        v2 = Path("/sys/fs/cgroup")
        for root in (v2, v2 / "unified"):
            try:
                if "cpu" in (root / "cgroup.controllers").read_text().split():
                    path = root / name
                    path.mkdir()
                    if (path / "cpu.max").exists():
                        self.path, self.kind = path, "cgroup v2 cpu.max"
                        return
                    path.rmdir()
            except OSError as e:
                self.why = f"{root}: {e.strerror}"
        v1 = v2 / "cpu"
        try:
            path = v1 / name
            path.mkdir()
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            self.path, self.kind = path, "cgroup v1 cpu.cfs_quota_us"
        except OSError as e:
            self.why = f"{v1}: {e.strerror}"

    def add(self, pid: int) -> None:
        if self.path is not None:
            (self.path / "cgroup.procs").write_text(str(pid))

    def set(self, percent: float | None) -> None:
        if self.path is None:
            return
        quota = -1 if percent is None else int(PERIOD_US * percent / 100)
        if self.kind.startswith("cgroup v2"):
            (self.path / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {PERIOD_US}")
        else:
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def throttled(self) -> int:
        """Periods in which the quota stopped the daemon (cpu.stat nr_throttled)."""
        if self.path is None:
            return 0
        for line in (self.path / "cpu.stat").read_text().splitlines():
            if line.startswith("nr_throttled"):
                return int(line.split()[1])
        return 0

    def remove(self) -> None:
        if self.path is not None:
            try:
                self.path.rmdir()
            except OSError:
                pass


def _schedstat(pid: int, field: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[field])
        except (OSError, IndexError):
            pass
    return total


def switches(pid: int) -> int:
    """Times any thread of `pid` was scheduled in (schedstat's third field, summed)."""
    return _schedstat(pid, 2)


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid` in ns (schedstat's first field): the clock-tick
    resolution of /proc/<pid>/stat is too coarse for a few seconds of a few % of a core."""
    return _schedstat(pid, 0) / 1e9


async def echo_both_ways(port: int, seconds: float) -> tuple[float, Checker]:
    """Send the pattern as fast as the forward takes it and check the echo as it comes back:
    both directions of the line at once. Returns (goodput each way, checker)."""
    stream = await connect(port, ECHO)
    checker = Checker()
    offset = 0

    async def sender() -> None:
        nonlocal offset
        while True:
            await stream.send_all(pattern_at(offset, 16384))
            offset += 16384

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            deadline = math.inf
            with trio.fail_after(30 + seconds):
                while time.perf_counter() < deadline:
                    data = await stream.receive_some(MAX_IO)
                    if not data:
                        raise Corrupted("echo ended early")
                    checker.feed(data, time.perf_counter())
                    if deadline == math.inf:
                        deadline = checker.first + seconds
            nursery.cancel_scope.cancel()
    finally:
        abort(stream)
    return checker.goodput(), checker


async def mix(port: int, servers: Servers, seconds: float) -> tuple[float, list[float]]:
    """11 bulk downloads and one 64-byte echo every 2 ms: aggregate bulk goodput, small RTTs."""
    stop = trio.Event()
    checkers: list[Checker] = []
    rtts: list[float] = []

    async def bulk() -> None:
        checkers.append(await download(port, None, marks=True, stop=stop))

    async with trio.open_nursery() as nursery:
        for _ in range(MIX_BULK):
            nursery.start_soon(bulk)
        echo = await Echo.open(port)
        await trio.sleep(1.0)  # all of them flowing
        t0 = time.perf_counter()
        while time.perf_counter() < t0 + seconds:
            rtts.append(await echo.rtt())
            await trio.sleep(0.002)
        t1 = time.perf_counter()
        echo.close()
        stop.set()
    moved = sum(c.bytes_between(t0, t1) for c in checkers)
    return moved / (t1 - t0), rtts


@dataclass
class Point:
    """The figures of one quota point, over the rounds."""

    down: Spread = field(default_factory=Spread)
    up: Spread = field(default_factory=Spread)
    echo: Spread = field(default_factory=Spread)
    mix: Spread = field(default_factory=Spread)
    small_p50: Spread = field(default_factory=Spread)
    cpu_mb: dict[str, Spread] = field(default_factory=dict)
    sw_mb: dict[str, Spread] = field(default_factory=dict)
    throttled: int = 0

    def cost(self, what: str, cpu: float, sw: int, mb: float) -> None:
        self.cpu_mb.setdefault(what, Spread()).add(cpu / mb)
        self.sw_mb.setdefault(what, Spread()).add(sw / mb)


async def measure(point: Point, daemon: Daemon, port: int, servers: Servers, window: float,
                  tag: int) -> None:
    pid = daemon.stats.pid

    async def costed(what: str, run) -> float:
        c0, s0 = cpu_seconds(pid), switches(pid)
        good, mb = await run()
        point.cost(what, cpu_seconds(pid) - c0, switches(pid) - s0, mb)
        await trio.sleep(0.3)
        return good

    async def down():
        c = await download(port, window)
        return c.goodput(), c.offset / 1e6

    async def up():
        c = await upload(port, servers, tag, window, size=int(window * LINE))
        return c.goodput(), c.offset / 1e6

    async def echo():
        good, c = await echo_both_ways(port, window)
        return good, 2 * c.offset / 1e6  # each byte crossed the line twice

    point.down.add(await costed("down", down) / LINE)
    point.up.add(await costed("up", up) / LINE)
    point.echo.add(await costed("echo", echo))
    good, rtts = await mix(port, servers, window)
    point.mix.add(good)
    point.small_p50.add(pct(rtts, .5) * 1e3)
    await trio.sleep(2.0)  # the mix's 12 closes (QICLOSE each) end before the next CPU window


async def idle(daemon: Daemon, seconds: float) -> tuple[float, float]:
    """CPU share of one core and switches/s while serving with no traffic."""
    pid = daemon.stats.pid
    c0, s0, t0 = cpu_seconds(pid), switches(pid), time.perf_counter()
    await trio.sleep(seconds)
    dt = time.perf_counter() - t0
    return (cpu_seconds(pid) - c0) / dt, (switches(pid) - s0) / dt


def _ratio(values: Spread, base: Spread) -> Spread:
    return Spread([v / b for v, b in zip(values.values, base.values, strict=True)])


async def cpu_budget(opts, report, tmp: Path, servers: Servers) -> None:
    sub = tmp / "cpu-budget"
    sub.mkdir()
    quota = Quota()
    emu = Emulator(sub, baud=BAUD, qiact_delay=0.1, boot_delay=0.1)
    points = {p: Point() for p in (POINTS if quota.path else (None,))}
    window = opts.budget_seconds
    ready = Spread()
    try:
        async with emu.running():
            port = free_port()
            # the daemon's own health and radio periods (not the short health check of the
            # other sections): the idle figure is what a gateway pays
            config = daemon_config(sub, emu, servers.port, port)
            config = "\n".join(line for line in config.splitlines()
                               if not line.startswith("health_"))
            daemon = Daemon(sub, opts.src, config)
            daemon.check_source()
            daemon.on_start = quota.add
            async with daemon.running():
                ready.add(daemon.ready_at - daemon.started)
                await wait_serving(port)
                tag = 11000
                for r in range(opts.runs):
                    for percent, point in points.items():
                        quota.set(percent)
                        th0 = quota.throttled()
                        tag += 1
                        await measure(point, daemon, port, servers, window, tag)
                        point.throttled += quota.throttled() - th0
                        progress(
                            f"cpu-budget round {r + 1}: {_name(percent)}: down "
                            f"{point.down.values[-1]:.3f}, up {point.up.values[-1]:.3f}, echo "
                            f"{point.echo.values[-1]:.0f} B/s, mix {point.mix.values[-1]:.0f} B/s")
                quota.set(None)
                idle_cpu, idle_sw = await idle(daemon, opts.idle_seconds)
                peak = daemon.stats.hwm_mb()
    finally:
        quota.remove()
    _write(opts, report, quota, points, window, idle_cpu, idle_sw, ready, peak)


def _name(percent: float | None) -> str:
    return "no quota" if percent is None else f"{percent:g} % of one core"


def _write(opts, report, quota: Quota, points: dict, window: float, idle_cpu: float,
           idle_sw: float, ready: Spread, peak: float) -> None:
    base = points[None]
    rows = []
    for percent, p in points.items():
        rows.append([
            _name(percent), p.down.fmt(".3f"), p.up.fmt(".3f"),
            p.echo.fmt(".0f") + " B/s", _ratio(p.echo, base.echo).fmt(".2f"),
            _ratio(p.down, base.down).fmt(".3f"), _ratio(p.up, base.up).fmt(".3f"),
            _ratio(p.mix, base.mix).fmt(".3f"), p.small_p50.fmt(".1f"), str(p.throttled),
        ])
    mechanism = quota.kind if quota.path else f"none available ({quota.why})"
    report.section(
        f"8. CPU budget: the daemon alone under a CPU quota ({BAUD} baud)", [
            "daemon quota", "down ÷ line rate", "up ÷ line rate", "echo both ways (each way)",
            "echo ÷ no quota", "down ÷ no quota", "up ÷ no quota", "11 + 1 mix ÷ no quota",
            "mix: small p50 ms", "periods throttled"], rows,
        f"Quota mechanism: {mechanism}, {PERIOD_US // 1000} ms period; only the daemon's process "
        f"is in the cgroup. {opts.runs} rounds, each measuring every point in turn (no quota "
        f"first); ratios are to the same round's unconstrained figure, median (min–max). "
        f"Windows of {window:g} s. Echo: one connection sends the pattern as fast as the forward "
        f"takes it and checks the echo coming back. Mix: {MIX_BULK} bulk downloads and one 64-byte "
        f"echo every 2 ms on the same forward.",
    )
    cost_rows = []
    for what in ("down", "up", "echo"):
        cost_rows.append([what, base.cpu_mb[what].fmt(".3f"), base.sw_mb[what].fmt(".0f")])
    cost_rows.append([f"idle while serving, {opts.idle_seconds:g} s (health, radio polls)",
                      f"{idle_cpu * 100:.3f} % of one core", f"{idle_sw:.1f} /s"])
    cost_rows.append(["start → READY=1 (this daemon)", ready.fmt(".3f") + " s", "—"])
    cost_rows.append(["peak RSS after the 11 + 1 mix", f"{peak:.1f} MB", "—"])
    report.section(
        f"8b. Daemon CPU per MB moved at {BAUD} (no quota)", [
            "traffic", "CPU-seconds per MB", "task switches per MB"], cost_rows,
        "Process CPU time (every thread's /proc/<pid>/task/*/schedstat run time, in ns) over the "
        "bytes delivered; echo counts "
        "each byte twice (it crosses the line both ways). Switches: /proc/<pid>/task/*/schedstat.",
    )
    if quota.path:
        echo = _ratio(points[2.5].echo, base.echo).med
        report.target("cpu-budget: echo both ways in 2.5 % of a core ≥ 0.95 × no quota",
                      f"{echo:.2f}", echo >= 0.95)
        down = points[2.5].down.med
        report.target("cpu-budget: download in 2.5 % of a core ≥ 0.95 × line rate",
                      f"{down:.3f}", down >= 0.95)
    report.target("cpu-budget: idle CPU while serving < 0.2 % of one core",
                  f"{idle_cpu * 100:.3f} %", idle_cpu < 0.002)
    for what in ("down", "up"):
        report.target(f"cpu-budget: CPU-seconds per MB at {BAUD}, {what}",
                      base.cpu_mb[what].fmt(".3f"), None)
    report.target("cpu-budget: start → READY=1 < 1 s", f"{ready.med:.3f} s", ready.med < 1)
