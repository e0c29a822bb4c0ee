#!/usr/bin/env python3
"""modemd benchmark: one command, one table (printed, and written as bench/results/latest.md).

    .venv/bin/python bench/run.py --quick        # < 3 min: shorter windows, fewer samples
    .venv/bin/python bench/run.py                # full: longer windows + the 10-minute slow reader
    .venv/bin/python bench/run.py --daemon-src /tmp/modemd-before   # the daemon from another tree
    .venv/bin/python bench/run.py --only faults  # one section (repeatable; faults: lost commands)
    .venv/bin/python bench/run.py --only cpu-budget   # the daemon under a CPU quota (root: cgroup)

Everything runs on this machine: real TCP clients -> a real modemd process (`python -m modemd.cli`)
-> a real pty -> the emulator process (`python -m modemd.emulator --baud N`, a token-bucket-paced
line) -> real loopback servers. Every bulk byte is checked against the sent pattern. Figures are
"median (min–max)" over --runs runs; figures that are compared with each other come from the same
run of this command.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_budget import cpu_budget  # noqa: E402
from harness import (  # noqa: E402
    DOWN,
    ECHO,
    HDR,
    MAX_IO,
    ROOT,
    UP,
    Checker,
    Corrupted,
    Daemon,
    Echo,
    Emulator,
    RawAt,
    Servers,
    Spread,
    abort,
    connect,
    daemon_config,
    download,
    free_port,
    jain,
    pattern_at,
    pct,
    upload,
    wait_serving,
)

BAUDS = (115200, 921600, 0)
TURNAROUNDS = (0.0, 0.001, 0.005)
MSG = 64
# The issue asks for 12 bulk connections plus the small one: 13 module sockets, but every family
# has at most 12 connect_ids (BG96: 0-11), so the 13th would wait in modemd's queue for a free ID
# and move nothing (Jain's index 11/12 = 0.917 by construction). 11 bulk + 1 small = all 12 IDs.
FAIR_BULK = 11


def progress(text: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def baud_name(baud: int) -> str:
    return str(baud) if baud else "unlimited"


@dataclass
class Opts:
    quick: bool
    runs: int
    seconds: float          # window of one paced bulk transfer
    fast_seconds: float     # window of one unlimited-baud bulk transfer
    samples: int            # latency samples
    fair_seconds: float
    cost_seconds: float
    slow_minutes: float
    src: Path
    out: Path
    only: set[str] = field(default_factory=set)
    lost: int = 60          # commands lost on the line in the fault section
    budget_seconds: float = 6.0  # window of one cpu-budget measurement
    idle_seconds: float = 300.0  # idle CPU while serving (cpu-budget)

    def window(self, baud: int) -> float:
        if not baud:
            return self.fast_seconds
        # at least ~25 chunks of 1.5 kB per window, so the first-chunk edge stays < 4 %
        return max(self.seconds, 25 * 1530 / (baud / 10))


class Report:
    """Collects the table's sections as markdown and the targets as rows."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.targets: list[tuple[str, str, bool | None]] = []

    def section(self, title: str, head: list[str], rows: list[list[str]], note: str = "") -> None:
        lines = [f"### {title}", ""]
        if note:
            lines += [note, ""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        text = "\n".join(lines) + "\n"
        self.sections.append(text)
        print(text, flush=True)

    def target(self, name: str, figure: str, met: bool | None) -> None:
        self.targets.append((name, figure, met))
        mark = "n/a" if met is None else ("met" if met else "NOT met")
        print(f"target: {name}: {figure}: {mark}", flush=True)


# ---------------------------------------------------------------------------------------------
# 0. the emulator's own line rate


async def line_rate(opts: Opts, report: Report, servers: Servers) -> None:
    rows = []
    worst = 0.0
    for baud in (115200, 921600):
        rate = baud / 10
        rx, tx = Spread(), Spread()
        with tempfile.TemporaryDirectory() as tmp:
            emu = Emulator(Path(tmp), baud=baud, qiact_delay=0.0, boot_delay=0.0)
            async with emu.running():
                raw = RawAt(emu.tty)
                try:
                    await raw.setup()
                    for _ in range(opts.runs):
                        rx.add(await _raw_rx_rate(raw, rate, opts) / rate)
                    for _ in range(opts.runs):
                        await raw.open_push(0, servers.port)
                        tx.add(await _raw_tx_rate(raw, rate, opts) / rate)
                        await raw.cmd("AT+QICLOSE=0")
                finally:
                    raw.close()
        rows.append([str(baud), "host → module", f"{rx.med * rate:.0f}", rx.fmt(".4f")])
        rows.append([str(baud), "module → host", f"{tx.med * rate:.0f}", tx.fmt(".4f")])
        worst = max([worst, *(abs(v - 1) for v in rx.values + tx.values)])
    report.section(
        "0. Emulator line rate (raw AT client on the pty, no daemon)", [
            "baud", "direction", "bytes/s", "÷ (baud/10)"], rows,
        "host → module: noise lines the module ignores, then `AT`; module → host: a direct-push "
        "stream counted at the pty, framing included.",
    )
    report.target("emulator pacing within 1 % of baud/10", f"worst {worst * 100:.2f} %",
                  worst <= 0.01)


async def _raw_rx_rate(raw: RawAt, rate: float, opts: Opts) -> float:
    line = b"x" * 99 + b"\r"
    count = max(20, int(rate * opts.window(int(rate * 10)) / len(line)))
    blob = line * count + b"AT\r"
    t0 = time.perf_counter()
    await raw.write(blob)
    while await raw.line() != "OK":
        pass
    elapsed = time.perf_counter() - t0 - 6 / rate  # minus the OK's own wire time
    return len(blob) / elapsed


async def _raw_tx_rate(raw: RawAt, rate: float, opts: Opts) -> float:
    # the server streams once the header arrives; count everything the pty delivers
    size = int(rate * opts.window(int(rate * 10)))
    await raw.send(0, HDR.pack(DOWN, 0, size))
    raw.arrivals = []
    got = 0
    while got < size:
        got += len(await raw.push())
    arrivals, raw.arrivals = raw.arrivals, None
    (t_first, first), (t_last, _) = arrivals[0], arrivals[-1]
    total = sum(n for _, n in arrivals)
    return (total - first) / (t_last - t_first)


# ---------------------------------------------------------------------------------------------
# 1 + 2. bulk goodput


async def bulk(opts: Opts, report: Report, servers: Servers, emu: Emulator, daemon: Daemon,
               port: int, raw_up: dict[int, Spread]) -> dict:
    results: dict[tuple[int, float, str], dict[str, Spread]] = {}
    rows = []
    tag = 1000
    for turnaround in TURNAROUNDS:
        await emu.control(f"turnaround {turnaround}")
        for baud in BAUDS:
            await emu.control(f"baud {baud}")
            for direction in ("down", "up"):
                good, cpu = Spread(), Spread()
                for _ in range(opts.runs):
                    stats = daemon.stats
                    c0, t0 = stats.cpu(), time.perf_counter()
                    if direction == "down":
                        checker = await download(port, opts.window(baud))
                    else:
                        tag += 1
                        window = opts.window(baud)
                        size = int(window * baud / 10) if baud else None
                        checker = await upload(port, servers, tag, window, size=size)
                    c1, t1 = stats.cpu(), time.perf_counter()
                    good.add(checker.goodput())
                    cpu.add((c1 - c0) / (t1 - t0))
                    await trio.sleep(0.3)
                results[(baud, turnaround, direction)] = {"good": good, "cpu": cpu}
                progress(f"bulk {baud_name(baud)} {turnaround * 1000:g} ms {direction}: "
                         f"{good.fmt('.0f')} B/s, CPU {cpu.fmt('.1f', 100)} %")
                if baud:
                    eff = Spread([v / (baud / 10) for v in good.values])
                    shown = good.fmt(".0f") + " B/s"
                    ratio = eff.fmt(".3f")
                else:
                    shown = good.fmt(".2f", 1e-6) + " MB/s"
                    ratio = "—"
                rows.append([baud_name(baud), f"{turnaround * 1000:g} ms", direction, shown,
                             ratio, cpu.fmt(".1f", 100)])
    for baud, spread in raw_up.items():
        if baud:
            shown, ratio = spread.fmt(".0f") + " B/s", Spread(
                [v / (baud / 10) for v in spread.values]).fmt(".3f")
        else:
            shown, ratio = spread.fmt(".2f", 1e-6) + " MB/s", "—"
        rows.append([baud_name(baud), "0 ms", "up, raw AT client (no daemon)", shown, ratio, "—"])
    report.section(
        "1–2. Bulk TCP through a forward", [
            "baud", "module turnaround", "direction", "goodput", "goodput ÷ (baud/10)",
            "daemon CPU % of one core"], rows,
        f"One connection, {opts.runs} runs each; goodput from the first to the last byte at the "
        "receiver (the first chunk marks the start). `down`: remote server → module → daemon → "
        "local client; `up`: the reverse. `raw AT client`: a minimal client on the pty doing one "
        "AT+QISEND after another (no daemon), the upload floor the emulator allows.",
    )
    for baud in (115200, 921600):
        for direction in ("down", "up"):
            eff = results[(baud, 0.0, direction)]["good"].med / (baud / 10)
            report.target(f"bulk {direction} at {baud}, 0 ms turnaround ≥ 0.95 × line rate",
                          f"{eff:.3f}", eff >= 0.95)
    eff = results[(921600, 0.005, "down")]["good"].med / 92160
    report.target("download at 921600 with 5 ms turnaround ≥ 0.85 × line rate", f"{eff:.3f}",
                  eff >= 0.85)
    for direction in ("down", "up"):
        mbs = results[(0, 0.0, direction)]["good"].med / 1e6
        report.target(f"unlimited baud {direction} ≥ 10 MB/s", f"{mbs:.2f} MB/s", mbs >= 10)
    cpu = max(results[(921600, 0.0, d)]["cpu"].med for d in ("down", "up"))
    report.target("daemon CPU at 921600 full load < 5 % of one core", f"{cpu * 100:.1f} %",
                  cpu < 0.05)
    return results


# ---------------------------------------------------------------------------------------------
# 3. latency


def wire_seconds(baud: int, connect_id: int) -> float:
    """Line time of one 64-byte exchange on the critical path: command, prompt, payload, SEND OK,
    then the answer as a direct-push URC (the same bytes a QIRD answer would need, within 5)."""
    if not baud:
        return 0.0
    cid = str(connect_id)
    up = len(f"AT+QISEND={cid},{MSG}\r") + MSG
    down = len("\r\n> ") + len("\r\nSEND OK\r\n") + len(f'\r\n+QIURC: "recv",{cid},{MSG}\r\n') \
        + MSG + 2
    return (up + down) / (baud / 10)


async def raw_latency(emu: Emulator, servers: Servers, samples: int) -> dict[int, list[float]]:
    """The same 64-byte exchange by a minimal AT client on the pty: the emulator's floor."""
    out: dict[int, list[float]] = {}
    raw = RawAt(emu.tty)
    try:
        await raw.setup()
        await raw.open_push(0, servers.port)
        await raw.send(0, HDR.pack(ECHO, 0, 0))
        msg = os.urandom(MSG)
        for baud in (921600, 0):
            await emu.control(f"baud {baud}")
            values = []
            for i in range(samples + 5):
                t0 = time.perf_counter()
                await raw.send(0, msg)
                got = b""
                while len(got) < MSG:
                    got += await raw.push()
                if i >= 5:
                    values.append(time.perf_counter() - t0)
            out[baud] = values
        await raw.cmd("AT+QICLOSE=0")
    finally:
        raw.close()
    return out


async def raw_upload(emu: Emulator, servers: Servers, opts: Opts) -> dict[int, Spread]:
    """Bulk upload by a minimal AT client on the pty (QISEND, prompt, payload, SEND OK, no
    pipelining, no ACK queries): what the emulator allows at zero turnaround, the floor the
    daemon's upload is compared with."""
    out: dict[int, Spread] = {}
    raw = RawAt(emu.tty)
    tag = 900
    try:
        await raw.setup()
        for baud in (921600, 0):
            await emu.control(f"baud {baud}")
            spread = Spread()
            for _ in range(opts.runs):
                tag += 1
                result = servers.expect_upload(tag)
                await raw.open_push(1, servers.port)
                await raw.send(1, HDR.pack(UP, tag, 0))
                offset, end = 0, time.perf_counter() + opts.window(baud)
                while time.perf_counter() < end:
                    await raw.send(1, bytes(pattern_at(offset, 1460)))
                    offset += 1460
                await raw.cmd("AT+QICLOSE=1")
                with trio.fail_after(10):
                    await result.done.wait()
                spread.add(result.checker.goodput())
            out[baud] = spread
            progress(f"raw AT client upload {baud_name(baud)}: {spread.fmt('.0f')} B/s")
    finally:
        raw.close()
    return out


async def direct_latency(port: int, samples: int) -> list[float]:
    """The loopback TCP round trip to the echo server with no module in between."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(HDR.pack(ECHO, 0, 0))
    echo = Echo(stream, MSG)
    values = await echo.samples(samples + 5)
    echo.close()
    return values[5:]


async def latency(opts: Opts, report: Report, emu: Emulator, daemon: Daemon, port: int,
                  raw: dict[int, list[float]], direct: list[float]) -> dict[int, list[float]]:
    rows = [["—", "loopback TCP, no module", f"{pct(direct, .5) * 1e3:.3f}",
             f"{pct(direct, .99) * 1e3:.3f}", "—", "—", "—"]]
    via: dict[int, list[float]] = {}
    for baud in (921600, 0):
        await emu.control(f"baud {baud}")
        echo = await Echo.open(port, MSG)
        values = (await echo.samples(opts.samples + 5))[5:]
        echo.close()
        via[baud] = values
        wire_raw, wire = wire_seconds(baud, 0), wire_seconds(baud, 11)
        r = raw[baud]
        rows.append([baud_name(baud), "raw AT client on the pty", f"{pct(r, .5) * 1e3:.3f}",
                     f"{pct(r, .99) * 1e3:.3f}", f"{wire_raw * 1e3:.3f}",
                     f"{(pct(r, .5) - wire_raw) * 1e3:.3f}", f"{(pct(r, .99) - wire_raw) * 1e3:.3f}"])
        rows.append([baud_name(baud), "client → modemd forward", f"{pct(values, .5) * 1e3:.3f}",
                     f"{pct(values, .99) * 1e3:.3f}", f"{wire * 1e3:.3f}",
                     f"{(pct(values, .5) - wire) * 1e3:.3f}",
                     f"{(pct(values, .99) - wire) * 1e3:.3f}"])
        await trio.sleep(0.2)
    report.section(
        "3. 64-byte request/response latency (ms)", [
            "baud", "path", "p50", "p99", "wire time", "added p50", "added p99"], rows,
        f"{opts.samples} round trips back to back on one open connection to an echo server. Wire "
        "time: the exchange's bytes on the critical path (AT+QISEND command, prompt, payload, SEND "
        "OK, the answer's push URC) at baud/10. The raw AT client is the floor the emulator allows.",
    )
    added50 = pct(via[0], .5)
    added99 = pct(via[0], .99)
    report.target("added latency at unlimited baud: p50 < 1 ms", f"{added50 * 1e3:.3f} ms",
                  added50 < 0.001)
    report.target("added latency at unlimited baud: p99 < 5 ms", f"{added99 * 1e3:.3f} ms",
                  added99 < 0.005)
    return via


# ---------------------------------------------------------------------------------------------
# 4. fairness


async def bulk_one(port: int, servers: Servers, direction: str, tag: int, stop: trio.Event,
                   sink: list[Checker]) -> None:
    """One endless bulk transfer until `stop`; its checker goes to `sink`."""
    if direction == "down":
        sink.append(await download(port, None, marks=True, stop=stop))
    else:
        sink.append(await upload(port, servers, tag, None, stop=stop))


async def probe_rtts(probe: tuple[int, int], *args: str) -> list[float]:
    """Run bench/echo_probe.py (its own process: both ends of the small connection)."""
    forward_port, server_port = probe
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "echo_probe.py"),
           str(server_port), str(forward_port), *args]
    result = await trio.run_process(cmd, capture_stdout=True)
    return json.loads(result.stdout)["rtts"]


async def fairness(opts: Opts, report: Report, servers: Servers, emu: Emulator, port: int,
                   probe: tuple[int, int]) -> None:
    rows = []
    for baud in (0, 921600):
        await emu.control(f"baud {baud}")
        for direction in ("down", "up"):
            alone = await probe_rtts(probe, "--count", str(opts.samples // 2))
            stop = trio.Event()
            checkers: list[Checker] = []

            async with trio.open_nursery() as nursery:
                for i in range(FAIR_BULK):
                    nursery.start_soon(bulk_one, port, servers, direction, 5000 + i, stop, checkers)
                await trio.sleep(min(2.0, opts.fair_seconds / 3))  # all of them running
                t0 = time.perf_counter()
                loaded = await probe_rtts(probe, "--seconds", str(opts.fair_seconds))
                t1 = time.perf_counter()
                stop.set()
            if direction == "up":
                shares = [c.offset for c in checkers]  # all stopped together: totals
            else:
                shares = [c.bytes_between(t0, t1) for c in checkers]
            index = jain(shares)
            ratio = pct(loaded, .99) / pct(alone, .99)
            rows.append([
                baud_name(baud), f"{FAIR_BULK} × bulk {direction}", f"{index:.3f}",
                f"{sum(shares) / (t1 - t0) / 1e6:.3f}" if direction == "down" else
                f"{sum(shares) / 1e6:.2f} MB total",
                f"{pct(alone, .5) * 1e3:.2f} / {pct(alone, .99) * 1e3:.2f}",
                f"{pct(loaded, .5) * 1e3:.2f} / {pct(loaded, .99) * 1e3:.2f}", f"{ratio:.1f}×",
            ])
            if baud == 0:
                report.target(f"Jain's index over {FAIR_BULK} bulk {direction} ≥ 0.95",
                              f"{index:.3f}", index >= 0.95)
                report.target(f"small p99 under {FAIR_BULK} × bulk {direction} ≤ 3 × idle p99 "
                              "(unlimited)",
                              f"{ratio:.1f}×", ratio <= 3)
            await trio.sleep(1.0)
    report.section(
        f"4. Fairness: {FAIR_BULK} bulk connections + 1 small request/response (all 12 "
        "connect_ids)", [
            "baud", "load", f"Jain's index ({FAIR_BULK})", "aggregate MB/s", "small p50 / p99 alone (ms)",
            "small p50 / p99 under load (ms)", "p99 ratio"], rows,
        f"The {FAIR_BULK} run together for {opts.fair_seconds:g} s; Jain's index over the bytes each moved "
        "in that window (uploads: over each one's total). The small connection sends 64 bytes and "
        "waits for the echo, 2 ms apart, alone first and then under the load, in the same run; it "
        "runs in a process of its own (bench/echo_probe.py, client and echo server, through a "
        "second forward), so its figures do not include the bench loop that drives the bulk "
        "transfers.",
    )


# ---------------------------------------------------------------------------------------------
# 5. cost


async def cost(opts: Opts, report: Report, servers: Servers, emu: Emulator, daemon: Daemon,
               port: int) -> None:
    await emu.control("baud 0")
    stats = daemon.stats
    rows = [["idle (after the runs above)", "—", "—", "—", f"{stats.rss_mb():.1f}"]]
    peaks = {}
    for n in (1, 4, 12):
        for direction in ("down", "up"):
            stats.reset_peak()
            stop = trio.Event()
            checkers: list[Checker] = []
            c0, t0 = stats.cpu(), time.perf_counter()
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(bulk_one, port, servers, direction, 7000 + i, stop, checkers)
                await trio.sleep(opts.cost_seconds)
                stop.set()
            c1, t1 = stats.cpu(), time.perf_counter()
            mb = sum(c.offset for c in checkers) / 1e6
            peak = stats.hwm_mb()
            peaks[n] = max(peaks.get(n, 0), peak)
            rows.append([str(n), direction, f"{mb / (t1 - t0):.2f}", f"{(c1 - c0) / mb:.3f}",
                         f"{peak:.1f}"])
            await trio.sleep(0.5)
    report.section(
        "5. Cost: daemon CPU and memory at unlimited baud", [
            "connections", "direction", "MB/s (all)", "daemon CPU s per MB", "peak RSS MB"], rows,
        f"{opts.cost_seconds:g} s per row; peak RSS is VmHWM, reset before each row "
        "(/proc/<pid>/clear_refs).",
    )
    report.target("peak RSS with 12 connections < 60 MB", f"{peaks[12]:.1f} MB", peaks[12] < 60)


async def slow_reader(opts: Opts, report: Report, servers: Servers, emu: Emulator,
                      daemon: Daemon, port: int) -> None:
    """A local client reading 2 kB every 100 ms while the remote sends as fast as it can."""
    await emu.control("baud 0")
    stats = daemon.stats
    stream = await connect(port, DOWN)
    samples: list[tuple[float, float]] = []
    offset = 0
    t0 = time.perf_counter()
    end = t0 + opts.slow_minutes * 60
    next_sample = t0
    while time.perf_counter() < end:
        data = await stream.receive_some(2048)
        if not data or pattern_at(offset, len(data)) != data:
            raise SystemExit("slow reader: stream ended or corrupted")
        offset += len(data)
        now = time.perf_counter()
        if now >= next_sample:
            samples.append((now - t0, stats.rss_mb()))
            next_sample += 5.0
        await trio.sleep(0.1)
    stream.socket.close()
    settled = [rss for t, rss in samples if t >= 30] or [samples[-1][1]]
    growth = settled[-1] - settled[0]
    rows = [[f"{opts.slow_minutes:g} min", f"{offset / 1e3 / (time.perf_counter() - t0):.1f}",
             f"{samples[0][1]:.1f}", f"{settled[0]:.1f}", f"{settled[-1]:.1f}",
             f"{max(r for _, r in samples):.1f}", f"{growth:+.2f}"]]
    report.section(
        "5b. Slow local reader while the remote keeps sending (unlimited baud)", [
            "duration", "read kB/s", "RSS at start", "RSS at 30 s", "RSS at end", "RSS max",
            "growth 30 s → end (MB)"], rows,
        "The client reads 2 kB every 100 ms; the remote server writes as fast as TCP lets it. "
        "Every byte read is checked against the pattern.",
    )
    report.target("RSS flat over the slow-reader run (growth < 1 MB)", f"{growth:+.2f} MB",
                  abs(growth) < 1.0)


# ---------------------------------------------------------------------------------------------
# 6. recovery


async def start_times(opts: Opts, tmp: Path, servers: Servers, emu: Emulator) -> tuple[Spread, Spread]:
    ready, serving = Spread(), Spread()
    for i in range(opts.runs):
        await emu.control("power on")  # a freshly booted module: no context active yet
        await trio.sleep(emu.boot_delay + 0.1)
        sub = tmp / f"start{i}"
        sub.mkdir()
        port = free_port()
        daemon = Daemon(sub, opts.src, daemon_config(sub, emu, servers.port, port))
        async with daemon.running():
            assert daemon.ready_at is not None
            ready.add(daemon.ready_at - daemon.started)
            serving.add(await wait_serving(port) - daemon.started)
        await trio.sleep(0.3)
    return ready, serving


async def recovery(opts: Opts, report: Report, emu: Emulator, port: int,
                   ready: Spread, serving: Spread) -> None:
    await emu.control("baud 115200")
    await emu.control("turnaround 0")
    pdp, hang = Spread(), Spread()
    for _ in range(opts.runs):
        await wait_serving(port)
        await trio.sleep(0.5)
        t0 = time.perf_counter()
        await emu.control("pdpdeact 1")
        await trio.sleep(0.05)  # the URC reaches the daemon; sockets of the context go down
        pdp.add(await wait_serving(port, poll=0.01) - t0)
    for _ in range(1 if opts.quick else opts.runs):
        await wait_serving(port)
        await trio.sleep(0.5)
        t0 = time.perf_counter()
        await emu.control("hang on")
        await trio.sleep(0.05)
        hang.add(await wait_serving(port, timeout=180) - t0)
    rows = [
        ["start → READY=1", ready.fmt(".3f"), "config loaded, listeners bound"],
        ["start → serving (first echo through the forward)", serving.fmt(".3f"),
         f"module booted, context inactive; includes QIACT delay {emu.qiact_delay:g} s"],
        ["pdpdeact → serving", pdp.fmt(".3f"), f"includes the emulator's QIACT delay "
         f"{emu.qiact_delay:g} s"],
        ["module hang → serving", hang.fmt(".3f"),
         "detection (health AT every 3 s, 3 s deadline), 3 × 1 s resync, supply cut 0.5 s, "
         f"emulator boot {emu.boot_delay:g} s, bring-up, QIACT delay {emu.qiact_delay:g} s"],
        ["emulator boot (configured)", f"{emu.boot_delay:.3f}", "power-on → RDY"],
    ]
    report.section("6. Start-up and recovery (seconds, 115200 baud)", ["event", "seconds", "includes"],
                   rows)
    limit = 1.0 + emu.qiact_delay
    report.target(f"pdpdeact → serving ≤ 1 s + QIACT delay ({limit:g} s)", f"{pdp.med:.3f} s",
                  pdp.med <= limit)


# ---------------------------------------------------------------------------------------------
# 7. lost commands


FAULT_BAUD = 921600
# what is lost, in turn: (name, regex for the emulator's `lose command`)
LOSSES = (
    ("AT+QISEND (data)", r"AT\+QISEND=\d+,[1-9]\d*"),
    ("AT+QIRD", r"AT\+QIRD=\d+(,[1-9]\d*)?"),
    ("AT+QISEND=id,0 (ACK query)", r"AT\+QISEND=\d+,0"),
)


@dataclass
class Flow:
    """One direction of the fault section's bulk transfer, over however many connections."""

    name: str
    arrivals: list[float] = field(default_factory=list)  # when bytes arrived (monotonic clock)
    bytes: int = 0  # checked against the pattern
    resets: int = 0  # connections the daemon ended
    corrupt: list[str] = field(default_factory=list)  # duplicated / lost / changed bytes
    sha_ok: int = 0  # connections whose SHA-256 matched the sent stream's (on their byte count)


class _Arrivals:
    """Stands in for a server Checker's `marks`: each arrival goes to the flow at once."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def append(self, mark: tuple[float, int]) -> None:
        self.flow.arrivals.append(mark[0])


def _pattern_sha(size: int) -> str:
    h = hashlib.sha256()
    for offset in range(0, size, MAX_IO):
        h.update(pattern_at(offset, min(MAX_IO, size - offset)))
    return h.hexdigest()


async def _fault_download(port: int, flow: Flow, stop: trio.Event) -> None:
    """Endless downloads (a new connection when the daemon ends one) until `stop`."""
    while not stop.is_set():
        checker, h = Checker(), hashlib.sha256()
        stream = None
        try:
            stream = await connect(port, DOWN)
            while not stop.is_set():
                with trio.move_on_after(0.5):
                    data = await stream.receive_some(MAX_IO)
                    if not data:
                        raise trio.BrokenResourceError("EOF")
                    checker.feed(data, time.perf_counter())
                    h.update(data)
                    flow.arrivals.append(checker.last)
                    flow.bytes += len(data)
        except Corrupted as exc:
            flow.corrupt.append(f"download: {exc}")
        except (trio.BrokenResourceError, OSError):
            flow.resets += stream is not None  # (a refused connect is only retried)
            await trio.sleep(0.1)
        finally:
            if stream is not None:
                abort(stream)
        flow.sha_ok += checker.offset > 0 and h.hexdigest() == _pattern_sha(checker.offset)


async def _fault_upload(port: int, servers: Servers, flow: Flow, stop: trio.Event) -> None:
    """Endless uploads until `stop`; each ends with a check that the server got every byte."""
    tag = 8000
    while not stop.is_set():
        tag += 1
        result = servers.expect_upload(tag)
        result.checker.marks = _Arrivals(flow)  # type: ignore[assignment]
        stream = None
        offset = 0
        reset = False
        try:
            stream = await connect(port, UP, tag)
            stream.socket.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_SNDBUF, 32768)
            while not stop.is_set():
                await stream.send_all(pattern_at(offset, 4096))
                offset += 4096
            with trio.fail_after(60):
                while result.checker.offset < offset and not result.done.is_set():
                    await trio.sleep(0.005)
        except (trio.BrokenResourceError, OSError, trio.TooSlowError):
            flow.resets += stream is not None  # (a refused connect is only retried)
            reset = True
            await trio.sleep(0.1)
        finally:
            if stream is not None:
                abort(stream)
        with trio.move_on_after(5):
            await result.done.wait()  # the server has seen the end (its checker stopped)
        got = result.checker.offset
        flow.bytes += got
        if got > offset:
            flow.corrupt.append(f"upload: server got {got} bytes, {offset} were sent")
        elif got < offset and not reset:
            flow.corrupt.append(f"upload: server got {got} of {offset} bytes")
        elif result.checker.last and got and got == offset:
            flow.sha_ok += 1  # the server's checker compared every byte with the pattern


def _stall(arrivals: list[float], t: float, end: float) -> float:
    """The longest gap between arrivals around `t`: from the last arrival before it to the
    arrivals up to `end` (when the next loss happens, or the run ends; a gap still open at
    `end` counts up to `end`)."""
    k = max(0, bisect.bisect_right(arrivals, t) - 1)
    worst = 0.0
    while k < len(arrivals) and arrivals[k] < end:
        nxt = arrivals[k + 1] if k + 1 < len(arrivals) else end
        worst = max(worst, min(nxt, end) - arrivals[k])
        k += 1
    return worst


async def lost_commands(opts: Opts, report: Report, tmp: Path, servers: Servers) -> None:
    sub = tmp / "faults"
    sub.mkdir()
    emu = Emulator(sub, baud=FAULT_BAUD, qiact_delay=0.1, boot_delay=0.1)
    async with emu.running():
        port = free_port()
        config = daemon_config(sub, emu, servers.port, port)
        config = config.replace("[proxy]\n", "[proxy]\ndirect_push = false\n", 1)  # QIRD
        daemon = Daemon(sub, opts.src, config)
        daemon.check_source()
        async with daemon.running():
            await wait_serving(port)
            boots0 = int((await emu.control("status")).rsplit("boots=", 1)[1])
            down, up = Flow("down"), Flow("up")
            stop = trio.Event()
            losses: list[tuple[str, float]] = []
            missed: dict[str, int] = {}
            warm = 0.0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_fault_download, port, down, stop)
                nursery.start_soon(_fault_upload, port, servers, up, stop)
                await trio.sleep(2.0)  # both flowing: the gaps without faults come first
                warm = time.perf_counter()
                for i in range(opts.lost):
                    name, regex = LOSSES[i % len(LOSSES)]
                    before = int((await emu.control("lost")).split()[1])
                    await emu.control(f"lose command {regex} 1")
                    deadline = time.perf_counter() + 10
                    while int((await emu.control("lost")).split()[1]) == before:
                        if time.perf_counter() > deadline:  # the daemon did not send one
                            await emu.control(f"lose command {regex} 0")
                            missed[name] = missed.get(name, 0) + 1
                            break
                        await trio.sleep(0.005)
                    else:
                        t = float((await emu.control("lost list")).split()[-1].split(":")[0])
                        losses.append((name, t))
                        # both directions deliver again before the next loss (no overlap)
                        with trio.move_on_after(30):
                            while not (down.arrivals and up.arrivals and down.arrivals[-1] > t
                                       and up.arrivals[-1] > t):
                                await trio.sleep(0.01)
                        await trio.sleep(0.2)
                    if (i + 1) % 10 == 0:
                        progress(f"faults: {i + 1} of {opts.lost} commands lost")
                end = time.perf_counter()
                await trio.sleep(1.0)
                stop.set()
            boots = int((await emu.control("status")).rsplit("boots=", 1)[1]) - boots0
    arrivals = {f.name: sorted(f.arrivals) for f in (down, up)}
    quiet = max(_stall(arrivals[d], 0.0, warm) for d in arrivals) if warm else 0.0
    stalls: dict[str, list[float]] = {}
    for i, (name, t) in enumerate(losses):
        nxt = losses[i + 1][1] if i + 1 < len(losses) else end
        stall = max(_stall(arrivals[d], t, nxt) for d in arrivals)
        stalls.setdefault(name, []).append(stall)
        stalls.setdefault("all", []).append(stall)
    rows = []
    for name in [n for n, _ in LOSSES] + ["all"]:
        values = stalls.get(name, [])
        rows.append([
            name, str(len(values)), str(missed.get(name, 0)) if name != "all" else
            str(sum(missed.values())),
            f"{pct(values, .5) * 1e3:.0f}" if values else "—",
            f"{pct(values, .99) * 1e3:.0f}" if values else "—",
        ])
    corrupt = down.corrupt + up.corrupt
    report.section(
        f"7. Lost commands during a bulk transfer both ways ({FAULT_BAUD} baud, buffer mode)", [
            "command lost on the line", "lost", "never sent (rule withdrawn)",
            "stall median (ms)", "stall p99 (ms)"], rows,
        f"The emulator loses one matching command line at a time (`lose command`), in turn, while "
        f"a download and an upload run through one forward; the next loss waits until both "
        f"directions deliver again. Stall: the longest gap between arrivals (at the local client "
        f"for the download, at the remote server for the upload) from the last arrival before the "
        f"loss until the next loss; without faults the longest gap was {quiet * 1e3:.0f} ms. "
        f"Bytes: down {down.bytes:,}, up {up.bytes:,}, every one compared with the sent pattern "
        f"(SHA-256 matched on {down.sha_ok + up.sha_ok} connections); duplicated or lost: "
        f"{len(corrupt)} ({'; '.join(corrupt[:3]) or 'none'}); connections reset: down "
        f"{down.resets}, up {up.resets}; module reboots: {boots}.",
    )
    progress(f"faults: {len(losses)} lost, stall median {pct(stalls.get('all', []), .5) * 1e3:.0f} "
             f"ms p99 {pct(stalls.get('all', []), .99) * 1e3:.0f} ms, corrupt {len(corrupt)}, "
             f"resets {down.resets + up.resets}, reboots {boots}")
    report.target(f"bytes duplicated or lost over {len(losses)} lost commands = 0",
                  str(len(corrupt)), not corrupt and len(losses) > 50)
    report.target("module reboots caused by lost commands = 0", str(boots), boots == 0)
    report.target("connections reset by lost commands = 0", str(down.resets + up.resets),
                  down.resets + up.resets == 0)


# ---------------------------------------------------------------------------------------------


def machine() -> list[str]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return [
        f"- machine: {os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), {model}, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, trio {trio.__version__}",
    ]


async def main(opts: Opts) -> None:
    report = Report()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modemd-bench-") as tmpdir:
        tmp = Path(tmpdir)
        servers = Servers()
        async with trio.open_nursery() as nursery:
            await nursery.start(servers.run)

            def want(name: str) -> bool:
                return not opts.only or name in opts.only

            if want("line"):
                await line_rate(opts, report, servers)
            if want("faults"):
                await lost_commands(opts, report, tmp, servers)
            if want("cpu-budget"):
                await cpu_budget(opts, report, tmp, servers)
            if opts.only and opts.only <= {"line", "faults", "cpu-budget"}:
                nursery.cancel_scope.cancel()
                write_report(opts, report, (time.perf_counter() - t_start) / 60)
                return
            emu = Emulator(tmp, baud=921600, qiact_delay=0.5, boot_delay=0.2)
            async with emu.running():
                raw = direct = None
                raw_up: dict[int, Spread] = {}
                if want("latency"):
                    raw = await raw_latency(emu, servers, opts.samples)
                    direct = await direct_latency(servers.port, opts.samples)
                if want("bulk"):
                    raw_up = await raw_upload(emu, servers, opts)
                ready = serving = Spread()
                if want("recovery"):
                    ready, serving = await start_times(opts, tmp, servers, emu)
                port = free_port()
                probe = (free_port(), free_port())
                daemon = Daemon(tmp, opts.src, daemon_config(tmp, emu, servers.port, port, probe))
                daemon.check_source()
                async with daemon.running():
                    await wait_serving(port)
                    if want("latency"):
                        await latency(opts, report, emu, daemon, port, raw, direct)
                    if want("bulk"):
                        await bulk(opts, report, servers, emu, daemon, port, raw_up)
                    await emu.control("turnaround 0")
                    if want("fairness"):
                        await fairness(opts, report, servers, emu, port, probe)
                    if want("cost"):
                        await cost(opts, report, servers, emu, daemon, port)
                    if want("slow") and opts.slow_minutes > 0:
                        await slow_reader(opts, report, servers, emu, daemon, port)
                    if want("recovery"):
                        await recovery(opts, report, emu, port, ready, serving)
            nursery.cancel_scope.cancel()
    minutes = (time.perf_counter() - t_start) / 60
    write_report(opts, report, minutes)


def write_report(opts: Opts, report: Report, minutes: float) -> None:
    rows = []
    for name, figure, met in report.targets:
        rows.append(f"| {name} | {figure} | {'—' if met is None else ('met' if met else '**not met**')} |")
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = "\n".join([
        f"## modemd benchmark ({'quick' if opts.quick else 'full'} mode, "
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z})",
        "",
        *machine(),
        f"- daemon source: `{opts.src}`; {opts.runs} runs per figure; took {minutes:.1f} min",
        f"- command: `{command.strip()}`",
        "",
        "### Targets",
        "",
        "| target | figure | |",
        "|---|---|---|",
        *rows,
        "",
        *report.sections,
    ])
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(text)
    print("\n".join(["### Targets", "", "| target | figure | |", "|---|---|---|", *rows]))
    print(f"\nwritten to {opts.out}")


def parse_args(argv: list[str] | None = None) -> Opts:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short windows, no slow-reader run (< 3 min)")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    p.add_argument("--slow-minutes", type=float, default=None,
                   help="slow-reader run length (default: 10 in full mode, 0 in quick mode)")
    p.add_argument("--daemon-src", type=Path, default=ROOT,
                   help="tree whose modemd package the daemon runs (default: this checkout)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.md")
    p.add_argument("--only", action="append", default=[],
                   choices=["line", "bulk", "latency", "fairness", "cost", "slow", "recovery",
                            "faults", "cpu-budget"],
                   help="run only these sections (repeatable)")
    p.add_argument("--lost", type=int, default=60,
                   help="commands lost in the fault section (default 60; the target needs > 50)")
    p.add_argument("--idle-seconds", type=float, default=None,
                   help="cpu-budget: idle CPU window (default 300 s; 60 s in quick mode)")
    a = p.parse_args(argv)
    quick = a.quick
    return Opts(
        quick=quick, runs=a.runs,
        seconds=1.0 if quick else 6.0,
        fast_seconds=1.0 if quick else 4.0,
        samples=200 if quick else 1000,
        fair_seconds=2.0 if quick else 8.0,
        cost_seconds=1.5 if quick else 4.0,
        slow_minutes=a.slow_minutes if a.slow_minutes is not None else (0.0 if quick else 10.0),
        src=a.daemon_src.resolve(), out=a.out, only=set(a.only), lost=a.lost,
        budget_seconds=3.0 if quick else 6.0,
        idle_seconds=a.idle_seconds if a.idle_seconds is not None else (60.0 if quick else 300.0),
    )


if __name__ == "__main__":
    trio.run(main, parse_args())
