#!/usr/bin/env python3
"""The small request/response connection of the fairness figure, in a process of its own.

bench/run.py drives 11 bulk transfers from its own trio loop; a latency probe sharing that loop
would measure the loop's queueing too (its bulk clients and servers keep it busy). This process is
both ends of the small connection instead: its own loopback echo server (the remote of the daemon's
`probe` forward) and the client that sends 64 bytes through that forward and waits for the echo.

    python bench/echo_probe.py SERVER_PORT FORWARD_PORT (--count N | --seconds S) [--gap 0.002]

Prints one JSON line, {"rtts": [seconds, ...]}; the first exchange (it opens the module socket) is
not among them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import trio

SIZE = 64


async def echo_server(port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def serve(stream: trio.SocketStream) -> None:
        try:
            async with stream:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started()
    await trio.serve_listeners(serve, listeners)


async def rtt(stream: trio.SocketStream, msg: bytes) -> float:
    t0 = time.perf_counter()
    await stream.send_all(msg)
    got = 0
    while got < len(msg):
        data = await stream.receive_some(65536)
        if not data:
            raise SystemExit("echo probe: the connection closed")
        got += len(data)
    return time.perf_counter() - t0


async def main(args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(echo_server, args.server_port)
        stream = await trio.open_tcp_stream("127.0.0.1", args.forward_port)
        msg = os.urandom(SIZE)
        with trio.fail_after(30):
            await rtt(stream, msg)  # opens the module socket: not a sample
        rtts: list[float] = []
        end = time.perf_counter() + args.seconds if args.seconds else math.inf
        while (len(rtts) < args.count if args.count else time.perf_counter() < end):
            rtts.append(await rtt(stream, msg))
            await trio.sleep(args.gap)
        await stream.aclose()
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
