"""Per-frame CPU of the sans-IO and dispatch layers for direct-push downloads (issue 16).

    .venv/bin/python bench/frame_cost.py [--frames 20000] [--size 1500] [--rounds 5] [--src DIR]

Feeds a byte stream of `+QIURC: "recv",0,<size>\\r\\n<payload>\\r\\n` frames, cut into reads of
about one frame (drifting boundaries, as the paced reader sees them), through the daemon's real
code: AtProtocol (framer, classification), AtChannel._dispatch (parse_urc, the metrics observer,
push_sink) and UrcDispatcher.route_push, down to a socket whose on_push only takes the bytes.
No trio run, no I/O: what is left is the Python work per frame. Prints µs per frame (best of the
rounds, and the median), for `protocol` alone and `dispatch` (the whole path). With `--src DIR`
another checkout's modemd is measured (run both back to back: the machine is shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20000)
    p.add_argument("--size", type=int, default=1500)
    p.add_argument("--read", type=int, default=0, help="bytes per read (default: a frame + 7)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent)
    opts = p.parse_args()
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
