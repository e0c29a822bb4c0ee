"""The daemon's CPU cost of one traffic kind at 921600, for profiling work (issue 16).

    .venv/bin/python bench/cpu_probe.py up --seconds 8 --rounds 2 [--daemon-src DIR]
        [--py-spy out.svg [--format raw]] [--strace out.txt] [--perf out.txt]

Runs the cpu-budget section's traffic (`down`, `up` or `echo`) through a real daemon (no quota)
and prints, per round: goodput, CPU-seconds per MB (schedstat), user and system time per MB,
task switches per MB, and voluntary / involuntary context switches. The last round can run under
py-spy (`--gil`: only samples holding the GIL), strace or `perf stat`, attached to the daemon.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import trio
from cpu_budget import BAUD, LINE, cpu_seconds, echo_both_ways, switches
from harness import (
    ROOT,
    Daemon,
    Emulator,
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
    if opts.what == "down":
        c = await download(port, opts.seconds)
        return c.goodput() / LINE, c.offset / 1e6
    if opts.what == "up":
        c = await upload(port, servers, tag, opts.seconds, size=int(opts.seconds * LINE))
        return c.goodput() / LINE, c.offset / 1e6
    good, c = await echo_both_ways(port, opts.seconds)
    return good, 2 * c.offset / 1e6  # each byte crossed the line twice


async def one_round(opts, pid: int, port: int, servers: Servers, last: bool, tag: int) -> None:
    tool = attach(opts, pid) if last else None
    if tool is not None:
        await trio.sleep(0.5)  # attached before the window opens
    c0, s0, t0, v0 = cpu_seconds(pid), switches(pid), user_system(pid), context_switches(pid)
    good, mb = await traffic(opts, port, servers, tag)
    cpu, sw = cpu_seconds(pid) - c0, switches(pid) - s0
    t1, v1 = user_system(pid), context_switches(pid)
    print(f"{opts.what}: goodput {good:.3f}  MB {mb:.2f}  CPU-s/MB {cpu / mb:.3f} "
          f"(user {(t1[0] - t0[0]) / mb:.3f}, system {(t1[1] - t0[1]) / mb:.3f})  "
          f"switches/MB {sw / mb:.0f} (voluntary {(v1[0] - v0[0]) / mb:.0f}, involuntary "
          f"{(v1[1] - v0[1]) / mb:.0f})", flush=True)
    if tool is not None:
        if not opts.py_spy:
            tool.send_signal(2)
        tool.wait()


async def main(opts) -> None:
    with tempfile.TemporaryDirectory(prefix="modemd-probe-") as tmpdir:
        tmp = Path(tmpdir)
        servers = Servers()
        async with trio.open_nursery() as nursery:
            await nursery.start(servers.run)
            emu = Emulator(tmp, baud=BAUD, qiact_delay=0.1, boot_delay=0.1)
            async with emu.running():
                port = free_port()
                config = daemon_config(tmp, emu, servers.port, port)
                config = "\n".join(x for x in config.splitlines() if not x.startswith("health_"))
                daemon = Daemon(tmp, opts.daemon_src, config)
                daemon.check_source()
                async with daemon.running():
                    await wait_serving(port)
                    for i in range(opts.rounds):
                        await one_round(opts, daemon.stats.pid, port, servers,
                                        i == opts.rounds - 1, 100 + i)
                        await trio.sleep(0.5)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("down", "up", "echo"))
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--daemon-src", type=Path, default=ROOT)
    p.add_argument("--py-spy", default="", help="py-spy output file (last round)")
    p.add_argument("--format", default="flamegraph", help="py-spy format: flamegraph, raw, ...")
    p.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    p.add_argument("--spy-mode", nargs="*", default=["--gil"],
                   help="py-spy sample selection (default --gil; none: every running sample)")
    p.add_argument("--strace", default="", help="strace output file (last round)")
    p.add_argument("--perf", default="", help="perf stat output file (last round)")
    trio.run(main, p.parse_args())
