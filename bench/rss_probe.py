"""Peak RSS of the daemon after the 11 + 1 connection mix, over several starts (issue 16).

    .venv/bin/python bench/rss_probe.py --starts 6 --seconds 4 [--daemon-src DIR] \\
        [--against OTHER_CHECKOUT]

One start's RSS differs from the next by up to about 0.4 MB (measured: the same tree idled at
33.7 and 34.0 MB), more than a change usually moves it, so one start per tree cannot tell "did
not grow" from noise. Here each start brings up an emulator and a daemon, runs the cpu-budget
section's mix (11 bulk downloads and one 64-byte echo every 2 ms, all 12 connect_ids) at 921600
for `--seconds`, and reads VmHWM; with --against, starts alternate between the two trees. It
prints every start, then the median (min-max) per tree.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import trio
from cpu_budget import BAUD, mix
from cpu_probe import serving
from harness import ROOT, ProcStats, Servers


async def one_start(tmp: Path, src: Path, servers: Servers, seconds: float) -> tuple[float, float]:
    """(idle RSS once serving, peak RSS after the mix) of a fresh daemon from `src`, in MB."""
    async with serving(tmp, src, servers, BAUD) as (pid, port):
        stats = ProcStats(pid)
        idle = stats.rss_mb()
        await mix(port, servers, seconds)
        return idle, stats.hwm_mb()


async def main(opts) -> None:
    srcs = [opts.daemon_src] + ([opts.against] if opts.against else [])
    peaks: dict[Path, list[float]] = {src: [] for src in srcs}
    with tempfile.TemporaryDirectory(prefix="modemd-rss-") as tmpdir:
        servers = Servers()
        async with trio.open_nursery() as nursery:
            await nursery.start(servers.run)
            for n in range(opts.starts):
                for i, src in enumerate(srcs):
                    idle, peak = await one_start(Path(tmpdir) / f"{n}-{i}", src, servers,
                                                 opts.seconds)
                    peaks[src].append(peak)
                    print(f"[{src}] start {n + 1}: serving {idle:.2f} MB, peak after the mix "
                          f"{peak:.2f} MB", flush=True)
            nursery.cancel_scope.cancel()
    for src, values in peaks.items():
        print(f"{src}: peak RSS median {statistics.median(values):.2f} MB "
              f"({min(values):.2f}-{max(values):.2f}, {len(values)} starts)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--starts", type=int, default=6)
    p.add_argument("--seconds", type=float, default=4.0, help="the mix's window per start")
    p.add_argument("--daemon-src", type=Path, default=ROOT)
    p.add_argument("--against", type=Path, default=None,
                   help="another checkout: starts alternate between the two trees")
    trio.run(main, p.parse_args())
