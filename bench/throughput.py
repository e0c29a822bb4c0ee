#!/usr/bin/env python3
"""Goodput of a TCP forward through modemd and the emulated module, down and up, per line rate.

    .venv/bin/python bench/throughput.py                   # 115200, 921600, unlimited
    .venv/bin/python bench/throughput.py --baud 921600 --mb 5 --seconds 20
    .venv/bin/python bench/throughput.py --in-process      # emulator in this process too

The emulator runs as its own process (`python -m modemd.emulator`, paced with --baud) unless
--in-process is given; the daemon's stack (serial port, AT channel, SocketManager, Proxy with one
[[forward]]) and the real loopback server and client run here. Each direction moves
min(--mb MB, line rate x --seconds) bytes, checked by SHA-256, and prints goodput and
goodput / (baud / 10) -- the share of the raw 8N1 line rate that reached the application.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import free_port  # noqa: E402  (bench/ is on sys.path: this runs as a script from it)

from modemd.at.channel import AtChannel, AtTimeout  # noqa: E402
from modemd.at.commands import QuectelAt  # noqa: E402
from modemd.config import parse_config  # noqa: E402
from modemd.link import ModemLink  # noqa: E402
from modemd.profiles import get_profile  # noqa: E402
from modemd.proxy.proxy import Proxy  # noqa: E402
from modemd.serial import SerialPort  # noqa: E402
from modemd.sockets.manager import SocketManager  # noqa: E402

CHUNK = 65536


@asynccontextmanager
async def emulator_tty(baud: int, family: str, in_process: bool):
    """The pty path of a running emulator (a child process, or a task here)."""
    if in_process:
        from modemd.emulator import Emulator, EmulatorConfig

        cfg = EmulatorConfig(family=family, baud=baud, boot_delay=0.0, qiact_delay=0.0)
        async with Emulator.open(cfg) as emu:
            yield emu.tty_path
        return
    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "tty")
        cmd = [sys.executable, "-m", "modemd.emulator", "--tty-link", link, "--family", family,
               "--baud", str(baud), "--boot-delay", "0", "--qiact-delay", "0"]
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(
                partial(trio.run_process, cmd, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, check=False)
            )
            with trio.fail_after(10):
                while not os.path.exists(link):
                    await trio.sleep(0.02)
            try:
                yield link
            finally:
                proc.terminate()


async def answering(at: QuectelAt) -> None:
    for _ in range(50):
        try:
            await at.at(timeout=0.5)
            return
        except AtTimeout:
            continue
    raise RuntimeError("the emulator never answered AT")


@asynccontextmanager
async def daemon(tty: str, family: str, server_port: int):
    """Serial port + AT channel + SocketManager + Proxy with one TCP forward; yields its port."""
    port = SerialPort.open(tty, 115200, lock_dir=None)
    channel = AtChannel(port)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            at = QuectelAt(channel, get_profile(family))
            await answering(at)
            for text in ("ATE0", "AT+CMEE=1", "AT+QISDE=0"):
                await at.run(text)
            await at.qicsgp(1, "internet")
            await at.qiact(1)
            link = ModemLink()
            link.at, link.profile = at, at.profile
            link.context_up(1, ("10.0.0.2",))
            listen = free_port()
            cfg = parse_config(
                f'[[forward]]\nname = "bench"\nlisten = "tcp:127.0.0.1:{listen}"\n'
                f'remote = "127.0.0.1:{server_port}"\n', emulate=True,
            )
            cfg = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, linger_seconds=0.5))
            manager = SocketManager(link, cfg.proxy, cfg.supervisor)
            await nursery.start(manager.run)
            await nursery.start(Proxy(cfg, manager).run)
            yield listen, channel
            nursery.cancel_scope.cancel()
    finally:
        port.close()


async def measure(tty: str, family: str, direction: str, data: bytes) -> float:
    """Seconds from the client's connect to the last byte at the receiving end."""
    done = trio.Event()
    result: dict[str, object] = {}

    async def server(stream: trio.SocketStream) -> None:
        try:
            if direction == "down":
                await stream.send_all(data)
            else:
                h, n = hashlib.sha256(), 0
                while n < len(data) and (chunk := await stream.receive_some(CHUNK)):
                    h.update(chunk)
                    n += len(chunk)
                result["end"], result["sha"] = time.perf_counter(), h.hexdigest()
                done.set()
                await stream.receive_some(1)
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server_port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, server, listeners)
        async with daemon(tty, family, server_port) as (listen, _channel):
            client = await trio.open_tcp_stream("127.0.0.1", listen)
            start = time.perf_counter()
            if direction == "down":
                h, n = hashlib.sha256(), 0
                while n < len(data) and (chunk := await client.receive_some(CHUNK)):
                    h.update(chunk)
                    n += len(chunk)
                result["end"], result["sha"] = time.perf_counter(), h.hexdigest()
            else:
                await client.send_all(data)
                await done.wait()
            await client.aclose()
        nursery.cancel_scope.cancel()
    if result["sha"] != hashlib.sha256(data).hexdigest():
        raise SystemExit(f"{direction}: payload corrupted")
    return float(result["end"]) - start  # type: ignore[arg-type]


async def run_baud(baud: int, args: argparse.Namespace) -> list[tuple]:
    rate = baud / 10
    size = int(args.mb * 1_000_000)
    if baud:
        size = min(size, int(rate * args.seconds))
    data = os.urandom(size)
    rows = []
    for direction in ("down", "up"):
        async with emulator_tty(baud, args.family, args.in_process) as tty:
            seconds = await measure(tty, args.family, direction, data)
        goodput = size / seconds
        rows.append((baud, direction, size, seconds, goodput, goodput / rate if baud else None))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baud", type=int, action="append",
                   help="line rate in bit/s, 0 = unlimited (repeatable; default 115200 921600 0)")
    p.add_argument("--mb", type=float, default=20.0, help="MB per direction (default 20)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="at a paced rate, move at most this many seconds of line time (default 10)")
    p.add_argument("--family", default="bg96")
    p.add_argument("--in-process", action="store_true", help="run the emulator in this process")
    args = p.parse_args()
    bauds = args.baud or [115200, 921600, 0]
    print(f"{'baud':>9} {'dir':>4} {'bytes':>10} {'seconds':>8} {'goodput B/s':>12} "
          f"{'goodput/(baud/10)':>18}")
    for baud in bauds:
        for b, direction, size, seconds, goodput, ratio in trio.run(run_baud, baud, args):
            shown = f"{ratio:.3f}" if ratio is not None else "n/a"
            label = str(b) if b else "unlimited"
            print(f"{label:>9} {direction:>4} {size:>10} {seconds:>8.2f} {goodput:>12.0f} "
                  f"{shown:>18}", flush=True)


if __name__ == "__main__":
    main()
