"""Per-frame CPU of the sans-IO and dispatch layers for direct-push downloads (issue 16).

    .venv/bin/python bench/frame_cost.py [--frames 20000] [--size 1500] [--rounds 5] [--src DIR]
    .venv/bin/python bench/frame_cost.py --in-situ [--runs 3] [--seconds 8] --src DIR [--src DIR2]

Feeds a byte stream of `+QIURC: "recv",0,<size>\\r\\n<payload>\\r\\n` frames, cut into reads of
about one frame (drifting boundaries, as the paced reader sees them), through the daemon's real
code: AtProtocol (framer, classification), AtChannel._dispatch (parse_urc, the metrics observer,
push_sink) and UrcDispatcher.route_push, down to a socket whose on_push only takes the bytes.
No trio run, no I/O: what is left is the Python work per frame. Prints µs per frame (best of the
rounds, and the median), for `protocol` alone and `dispatch` (the whole path). With `--src DIR`
another checkout's modemd is measured (run both back to back: the machine is shared).

`--in-situ` measures the same layers inside a real daemon instead (bench/frame_timer.py under
bench/cpu_probe.py `down`), for each `--src` in turn, `--runs` times: µs per frame (mean over the
run) and the median over the reads that carried one frame, beside cpu_probe's CPU-s/MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def stream(frames: int, size: int, cid: int = 0) -> bytes:
    payload = bytes(range(256)) * (size // 256 + 1)
    frame = f'+QIURC: "recv",{cid},{size}\r\n'.encode() + payload[:size] + b"\r\n"
    return frame * frames


def chunks(data: bytes, read: int) -> list[bytes]:
    return [data[i:i + read] for i in range(0, len(data), read)]


class Sink:
    """A socket that takes the pushed bytes (ModuleSocket.on_push's first lines)."""

    connect_id = 0

    def __init__(self) -> None:
        self.received = 0

    def on_push(self, data) -> None:
        self.received += len(data)


def setup(cid: int):
    from modemd.at.channel import AtChannel
    from modemd.metrics import Metrics
    from modemd.sockets.dispatcher import UrcDispatcher

    channel = AtChannel(transport=None, observer=Metrics())
    dispatcher = UrcDispatcher(lambda urc: None, lambda urc: None)
    sink = Sink()
    dispatcher.sockets[cid] = sink  # type: ignore[assignment]
    channel.push_sink = dispatcher.route_push
    channel.push_corrupt_sink = dispatcher.push_corrupt
    channel.set_push(cid, True)
    return channel, sink


def run_protocol(reads: list[bytes], cid: int) -> float:
    from modemd.at.protocol import AtProtocol

    proto = AtProtocol()
    proto.set_push(cid, True)
    receive, next_event = proto.receive, proto.next_event
    t0 = time.perf_counter()
    for data in reads:
        receive(data)
        while next_event() is not None:
            pass
    return time.perf_counter() - t0


def run_dispatch(reads: list[bytes], cid: int, size: int, frames: int) -> float:
    channel, sink = setup(cid)
    proto = channel.protocol
    dispatch = channel._dispatch
    t0 = time.perf_counter()
    for data in reads:  # the body of AtChannel._reader, without trio
        proto.receive(data)
        while (event := proto.next_event()) is not None:
            dispatch(event)
        proto.payload_missing  # noqa: B018 - the pacer asks it after every read
    elapsed = time.perf_counter() - t0
    assert sink.received == size * frames, (sink.received, size * frames)
    return elapsed


def in_situ(src: Path, seconds: float, rounds: int) -> str:
    """One cpu_probe run of `src` under frame_timer.py: its summary line."""
    with tempfile.TemporaryDirectory(prefix="frame-timer-") as tmp:
        out = Path(tmp) / "timer.json"
        env = dict(os.environ, MODEMD_BENCH_DAEMON_SCRIPT=str(BENCH / "frame_timer.py"),
                   MODEMD_FRAME_TIMER=str(out))
        probe = subprocess.run(
            [sys.executable, str(BENCH / "cpu_probe.py"), "down", "--seconds", str(seconds),
             "--rounds", str(rounds), "--daemon-src", str(src)],
            env=env, capture_output=True, text=True, check=True)
        cpu = [line.split("CPU-s/MB ")[1].split()[0] for line in probe.stdout.splitlines()
               if "CPU-s/MB" in line]
        t = json.loads(out.read_text())
    ones = [seconds for seconds, frames in t["reads"] if frames == 1]
    median = statistics.median(ones) * 1e6 if ones else float("nan")
    return (f"in-situ µs/frame mean {t['total'] / t['frames'] * 1e6:6.2f}  median (1-frame reads) "
            f"{median:6.2f}  frames {t['frames']}  CPU-s/MB {' '.join(cpu)}  ({src})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--size", type=int, default=1500)
    p.add_argument("--read", type=int, default=0, help="bytes per read (default: a frame + 7)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--src", type=Path, action="append")
    p.add_argument("--in-situ", action="store_true", help="time the layers in a real daemon")
    p.add_argument("--runs", type=int, default=3, help="--in-situ: runs per checkout")
    p.add_argument("--seconds", type=float, default=8.0, help="--in-situ: seconds per round")
    opts = p.parse_args()
    srcs = [s.resolve() for s in opts.src or [BENCH.parent]]
    if opts.in_situ:
        for _ in range(opts.runs):
            for src in srcs:
                print(in_situ(src, opts.seconds, 2), flush=True)
        return
    if len(srcs) > 1:
        p.error("give one --src without --in-situ (run it once per checkout)")
    opts.src = srcs[0]
    sys.path.insert(0, str(opts.src))
    import modemd

    assert Path(modemd.__file__).resolve().is_relative_to(opts.src.resolve()), modemd.__file__
    cid = 0
    data = stream(opts.frames, opts.size, cid)
    frame_len = len(data) // opts.frames
    reads = chunks(data, opts.read or frame_len + 7)
    for name, fn in (("protocol", lambda: run_protocol(reads, cid)),
                     ("dispatch", lambda: run_dispatch(reads, cid, opts.size, opts.frames))):
        times = [fn() / opts.frames * 1e6 for _ in range(opts.rounds)]
        print(f"{name:9s} µs/frame best {min(times):6.2f}  median {statistics.median(times):6.2f}"
              f"  ({opts.src})", flush=True)


if __name__ == "__main__":
    main()
