"""The daemon's CPU cost of one traffic kind at 921600, for profiling work (issue 16).

    .venv/bin/python bench/cpu_probe.py up --seconds 8 --rounds 2 [--daemon-src DIR]
        [--against OTHER_CHECKOUT]
        [--py-spy out.svg [--format raw]] [--strace out.txt] [--perf out.txt]

Runs the cpu-budget section's traffic (`down`, `up`, `echo`, or `mix`: 11 bulk downloads and one
small echo) through a real daemon (no quota) and prints, per round: goodput (÷ line rate; MB/s with
--baud 0), CPU-seconds per MB (schedstat), user and system time per MB, task switches per MB,
voluntary / involuntary context switches and the daemon's peak RSS so far (VmHWM); with --against,
rounds alternate between two daemons and the medians, their ratio and each daemon's peak RSS close
the output. The last round can run under py-spy (`--gil`: only samples holding the GIL), strace or
`perf stat`, attached to the daemon.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio
from cpu_budget import BAUD, cpu_seconds, echo_both_ways, mix, switches
from harness import (
    ROOT,
    Daemon,
    Emulator,
    ProcStats,
    Servers,
    daemon_config,
    download,
    free_port,
    upload,
    wait_serving,
)


def user_system(pid: int) -> tuple[float, float]:
    """utime, stime of `pid` in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


def context_switches(pid: int) -> tuple[int, int]:
    """Voluntary, involuntary context switches summed over the threads of `pid`."""
    vol = invol = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
    return vol, invol


def attach(opts, pid: int) -> subprocess.Popen | None:
    """The optional tool watching the daemon during the last round."""
    if opts.py_spy:
        spy = Path(sys.executable).parent / "py-spy"
        return subprocess.Popen(
            [str(spy), "record", "-p", str(pid), "-o", opts.py_spy, "-d",
             str(int(opts.seconds) + 1), "-r", str(opts.rate), "--nonblocking", *opts.spy_mode, "--format",
             opts.format], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if opts.strace:
        return subprocess.Popen(["strace", "-f", "-tt", "-p", str(pid), "-o", opts.strace],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if opts.perf:
        return subprocess.Popen(
            ["perf", "stat", "-e", "task-clock,context-switches,cpu-migrations", "-p", str(pid),
             "-o", opts.perf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return None


async def traffic(opts, port: int, servers: Servers, tag: int) -> tuple[float, float]:
    """(goodput, MB moved): ÷ line rate for down and up, B/s each way for echo."""
    line = opts.baud / 10 if opts.baud else 1e6  # unlimited: goodput in MB/s
    if opts.what == "down":
        c = await download(port, opts.seconds)
        return c.goodput() / line, c.offset / 1e6
    if opts.what == "up":
        size = int(opts.seconds * line) if opts.baud else None
        c = await upload(port, servers, tag, opts.seconds, size=size)
        return c.goodput() / line, c.offset / 1e6
    if opts.what == "mix":
        rate, _ = await mix(port, servers, opts.seconds)
        return rate / line, rate * opts.seconds / 1e6
    good, c = await echo_both_ways(port, opts.seconds)
    return good, 2 * c.offset / 1e6  # each byte crossed the line twice


async def one_round(opts, pid: int, port: int, servers: Servers, last: bool, tag: int,
                    label: str = "") -> float:
    tool = attach(opts, pid) if last else None
    if tool is not None:
        await trio.sleep(0.5)  # attached before the window opens
    c0, s0, t0, v0 = cpu_seconds(pid), switches(pid), user_system(pid), context_switches(pid)
    good, mb = await traffic(opts, port, servers, tag)
    cpu, sw = cpu_seconds(pid) - c0, switches(pid) - s0
    t1, v1 = user_system(pid), context_switches(pid)
    print(f"{label}{opts.what}: goodput {good:.3f}  MB {mb:.2f}  CPU-s/MB {cpu / mb:.3f} "
          f"(user {(t1[0] - t0[0]) / mb:.3f}, system {(t1[1] - t0[1]) / mb:.3f})  "
          f"switches/MB {sw / mb:.0f} (voluntary {(v1[0] - v0[0]) / mb:.0f}, involuntary "
          f"{(v1[1] - v0[1]) / mb:.0f})  peak RSS {ProcStats(pid).hwm_mb():.2f} MB", flush=True)
    if tool is not None:
        if not opts.py_spy:
            tool.send_signal(2)
        tool.wait()
    return cpu / mb


@asynccontextmanager
async def serving(tmp: Path, src: Path, servers: Servers, baud: int):
    """An emulator and a daemon from `src` behind it, serving: (daemon pid, forward port)."""
    tmp.mkdir()
    emu = Emulator(tmp, baud=baud, qiact_delay=0.1, boot_delay=0.1)
    async with emu.running():
        port = free_port()
        config = daemon_config(tmp, emu, servers.port, port)
        config = "\n".join(x for x in config.splitlines() if not x.startswith("health_"))
        daemon = Daemon(tmp, src, config)
        daemon.check_source()
        async with daemon.running():
            await wait_serving(port)
            yield daemon.stats.pid, port


@asynccontextmanager
async def probe_rig(prefix: str, srcs: list[Path], baud: int):
    """A temporary directory, the bench's loopback servers and a serving daemon from each of
    `srcs` (each with its own emulator, all running throughout: the same machine conditions
    for all): (tmp, servers, [(pid, forward port)], exit stack for more)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmpdir:
        tmp = Path(tmpdir)
        servers = Servers()
        async with trio.open_nursery() as nursery:
            await nursery.start(servers.run)
            async with AsyncExitStack() as stack:
                rigs = [await stack.enter_async_context(serving(tmp / str(i), src, servers, baud))
                        for i, src in enumerate(srcs)]
                yield tmp, servers, rigs, stack
            nursery.cancel_scope.cancel()


async def main(opts) -> None:
    """Rounds on the daemon from --daemon-src; with --against, alternately on both."""
    srcs = [opts.daemon_src] + ([opts.against] if opts.against else [])
    figures: dict[int, list[float]] = {i: [] for i in range(len(srcs))}
    async with probe_rig("modemd-probe-", srcs, opts.baud) as (_, servers, rigs, _stack):
        for r in range(opts.rounds):
            for i, (pid, port) in enumerate(rigs):
                label = f"[{srcs[i]}] " if opts.against else ""
                figures[i].append(await one_round(
                    opts, pid, port, servers, r == opts.rounds - 1 and i == 0,
                    100 + r * 2 + i, label))
                await trio.sleep(0.5)
        peaks = [ProcStats(pid).hwm_mb() for pid, _ in rigs]
    if opts.against:
        for i, src in enumerate(srcs):
            values = sorted(figures[i])
            print(f"{opts.what} {src}: CPU-s/MB median {statistics.median(values):.3f} "
                  f"({values[0]:.3f}-{values[-1]:.3f}, {len(values)} rounds), peak RSS "
                  f"{peaks[i]:.2f} MB")
        ratio = statistics.median(figures[0]) / statistics.median(figures[1])
        print(f"{opts.what}: {srcs[0]} / {srcs[1]} = {ratio:.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("down", "up", "echo", "mix"))
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--baud", type=int, default=BAUD,
                   help="the emulator's line (0: unlimited; goodput is then in MB/s)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--daemon-src", type=Path, default=ROOT)
    p.add_argument("--against", type=Path, default=None,
                   help="another checkout: rounds alternate between the two daemons")
    p.add_argument("--py-spy", default="", help="py-spy output file (last round)")
    p.add_argument("--format", default="flamegraph", help="py-spy format: flamegraph, raw, ...")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--spy-mode", nargs="*", default=["--gil"],
                   help="py-spy sample selection (default --gil; none: every running sample)")
    p.add_argument("--strace", default="", help="strace output file (last round)")
    p.add_argument("--perf", default="", help="perf stat output file (last round)")
    trio.run(main, p.parse_args())
