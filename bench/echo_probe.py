#!/usr/bin/env python3
"""The small request/response connection of the fairness figure, in a process of its own.

bench/run.py drives 11 bulk transfers from its own trio loop; a latency probe sharing that loop
would measure the loop's queueing too (its bulk clients and servers keep it busy). This process is
both ends of the small connection instead: its own loopback server (harness.Servers, the remote of
the daemon's `probe` forward) and the client (harness.Echo) that sends 64 bytes through that
forward and waits for the echo.

    python bench/echo_probe.py SERVER_PORT FORWARD_PORT (--count N | --seconds S) [--gap 0.002]

Prints one JSON line, {"rtts": [seconds, ...]}; the first exchange (it opens the module socket) is
not among them.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import trio
from harness import Echo, Servers  # bench/ is on sys.path: this runs as a script from it


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(Servers().run, args.server_port)
        echo = await Echo.open(args.forward_port)  # opens the module socket: not a sample
        rtts: list[float] = []
        end = time.perf_counter() + args.seconds if args.seconds else math.inf
        while (len(rtts) < args.count if args.count else time.perf_counter() < end):
            rtts.append(await echo.rtt())
            await trio.sleep(args.gap)
        echo.close()
        print(json.dumps({"rtts": rtts}), flush=True)
        nursery.cancel_scope.cancel()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("server_port", type=int)
    p.add_argument("forward_port", type=int)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--count", type=int, default=0)
    what.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--gap", type=float, default=0.002)
    return p.parse_args()


if __name__ == "__main__":
    trio.run(main, parse_args())
