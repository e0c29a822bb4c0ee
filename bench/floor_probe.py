"""What an upload or a download through the AT port costs at the least on this machine, next to
the daemon (issue 16).

    .venv/bin/python bench/floor_probe.py [up|down] --seconds 8 --rounds 3 [--daemon-src DIR]
        [--against DIR]

An upload at 921600 baud needs two wake-ups per 1,460-byte chunk whatever the program does: one for
the `>` prompt, one for SEND OK (the manual's rule: the payload only after `>`, the next command
only after the final result). A download in direct-push mode needs one read per N_TTY buffer (4 KB)
at most. This probe measures the CPU-seconds per MB of two programs that do nothing else, each a
fresh process talking straight to an emulator's pty:

- `trio`: a trio task. Upload: it writes `AT+QISEND=<id>,1460`, waits for `> ` with
  `trio.lowlevel.wait_readable`, writes the payload and waits for SEND OK, reading with `os.read`
  (no parser, no timers, no local socket, no metrics). Download: it sleeps the daemon's pause
  between reads of a stream (`LINGER_BYTES` at the line rate), reads what came and writes it,
  headers and all, to a loopback TCP socket (no parsing);
- `plain`: the same loop with blocking `select` / `time.sleep` and no event loop at all;

and, in the same rounds, the daemon's own transfer through a forward (cpu_probe.py's `up` or
`down`: a local TCP client, the bridge, the AT channel), and with --against a second daemon tree.
Rounds alternate between all of them. The medians and their ratios close the output: the daemon's
figure over the trio floor, and the trio floor over half of the --against tree's figure (the
halving target of issue 16: a ratio above 1 means even a program doing nothing but the transfer
in trio misses it). The download floor counts every byte it read (the push headers too: about
1.6 % more than the payload the daemon counts).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import statistics
import struct
import sys
import termios
import time
import tty
from functools import partial
from pathlib import Path

CHUNK = 1460  # the largest fixed-length AT+QISEND payload (BG96/EC2x manuals)


# -- the client: a separate process per round, so its figures are its own ------------------------
class Client:
    """A bare AT client on the emulator's pty: just enough to open one TCP connection and upload."""

    def __init__(self, path: str, connect_id: int, plain: bool) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        attrs[4] = attrs[5] = termios.B921600
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.buf = bytearray()
        self.connect_id = connect_id
        self.plain = plain

    async def wait(self) -> None:
        if self.plain:
            select.select([self.fd], [], [])
        else:
            import trio
            await trio.lowlevel.wait_readable(self.fd)

    async def until(self, *tokens: bytes) -> bytes:
        """Read until one of `tokens` arrives; return it (what came before is dropped)."""
        while True:
            for token in tokens:
                at = self.buf.find(token)
                if at >= 0:
                    del self.buf[:at + len(token)]
                    return token
            try:
                self.buf += os.read(self.fd, 65536)
            except BlockingIOError:
                await self.wait()

    async def command(self, text: str, *finals: bytes) -> bytes:
        os.write(self.fd, text.encode() + b"\r")
        return await self.until(*(finals or (b"OK\r\n", b"ERROR\r\n")))

    async def setup(self, port: int, tag: int, what: str = "up") -> None:
        """Answering, echo off, context up, one connection to the bench server, its header sent
        (down: in direct-push mode, the module pushes what the server sends at once)."""
        import trio
        while True:
            os.write(self.fd, b"AT\r")
            with trio.move_on_after(0.5):
                await self.until(b"OK\r\n")
                break
        await self.command("ATE0")
        await self.command("AT+QIACT=1")  # ERROR when a previous round left it active
        cid = self.connect_id
        mode = 1 if what == "down" else 0  # access_mode: 1 direct push, 0 buffer
        if await self.command(f'AT+QIOPEN=1,{cid},"TCP","127.0.0.1",{port},0,{mode}') \
                != b"OK\r\n":
            raise SystemExit(f"AT+QIOPEN={cid} failed")
        await self.until(b"+QIOPEN: ")
        at = -1
        while at < 0:
            at = self.buf.find(b"\r\n")
            if at < 0:
                self.buf += os.read(self.fd, 65536) if select.select([self.fd], [], [], 5)[0] else b""
        if bytes(self.buf[:at]) != f"{cid},0".encode():
            raise SystemExit(f"connect_id {cid}: the connection did not open: {bytes(self.buf[:at])!r}")
        kind = b"D" if what == "down" else b"U"
        await self.send(struct.pack("!cIQ", kind, tag, 0))  # the bench server's header

    async def send(self, payload: bytes | memoryview) -> bool:
        if await self.command(f"AT+QISEND={self.connect_id},{len(payload)}", b"> ",
                              b"ERROR\r\n") != b"> ":
            raise SystemExit("AT+QISEND answered ERROR")
        os.write(self.fd, payload)
        return await self.until(b"SEND OK\r\n", b"SEND FAIL\r\n") == b"SEND OK\r\n"

    async def upload(self, seconds: float) -> dict:
        from harness import pattern_at
        r0, t0, sent = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            if await self.send(pattern_at(sent, CHUNK)):
                sent += CHUNK
        usage = _usage(r0, t0, sent)
        await self.command(f"AT+QICLOSE={self.connect_id}")
        return usage


    async def download(self, seconds: float, sink_port: int) -> dict:
        """Read the pushed stream about LINGER_BYTES at a time (the daemon's pacing, at the line
        rate) and write it, headers and all, to a local TCP socket: no parsing at all."""
        import socket

        import trio
        from cpu_budget import BAUD

        from modemd.at.pacer import LINGER_BYTES
        sink = socket.create_connection(("127.0.0.1", sink_port))
        pause = LINGER_BYTES / (BAUD / 10)
        self.buf.clear()
        r0, t0, got = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            if self.plain:
                time.sleep(pause)
            else:
                await trio.sleep(pause)
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            sink.sendall(data)
            got += len(data)
        usage = _usage(r0, t0, got)
        sink.close()
        os.write(self.fd, f"AT+QICLOSE={self.connect_id}\r".encode())
        return usage


def _usage(r0, t0: float, moved: int) -> dict:
    """What this process used since `r0` (getrusage) and `t0` (monotonic) to move `moved` bytes."""
    r1, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    return {"bytes": moved, "seconds": elapsed, "user": r1.ru_utime - r0.ru_utime,
            "system": r1.ru_stime - r0.ru_stime, "voluntary": r1.ru_nvcsw - r0.ru_nvcsw,
            "involuntary": r1.ru_nivcsw - r0.ru_nivcsw}


def client_main(args: list[str]) -> None:
    path, port, seconds, mode, tag, what, sink_port = args
    import trio
    client = Client(path, int(tag) % 12, mode == "plain")

    def measured():  # the loop under measurement (a coroutine that never suspends when plain)
        if what == "down":
            return client.download(float(seconds), int(sink_port))
        return client.upload(float(seconds))

    async def run() -> dict:
        await client.setup(int(port), int(tag), what)
        return await measured()

    if mode == "plain":  # set up in trio, then the loop runs with no event loop at all
        trio.run(client.setup, int(port), int(tag), what)
        coro = measured()
        try:
            coro.send(None)
        except StopIteration as done:
            print(json.dumps(done.value))
        return
    print(json.dumps(trio.run(run)))


# -- the probe ------------------------------------------------------------------------------------
async def floor_round(emu, port: int, opts, mode: str, tag: int,
                      sink_port: int) -> tuple[float, str]:
    import trio
    done = await trio.run_process(
        [sys.executable, __file__, "--client", emu.tty, str(port), str(opts.seconds), mode,
         str(tag), opts.what, str(sink_port)],
        capture_stdout=True, env=python_env(ROOT), cwd=str(ROOT))
    r = json.loads(done.stdout)
    mb = r["bytes"] / 1e6
    cpu = r["user"] + r["system"]
    line = (f"goodput {r['bytes'] / r['seconds'] / (BAUD / 10):.3f}  MB {mb:.2f}  CPU-s/MB "
            f"{cpu / mb:.3f} (user {r['user'] / mb:.3f}, system {r['system'] / mb:.3f})  "
            f"switches/MB voluntary {r['voluntary'] / mb:.0f}, involuntary "
            f"{r['involuntary'] / mb:.0f}")
    return cpu / mb, line


async def _sink(stack) -> int:
    """A loopback TCP listener that reads and drops everything: where a download floor client
    delivers its bytes (its cost is this process's, not the client's). Returns its port."""
    import trio

    async def drop(stream) -> None:
        async with stream:
            while await stream.receive_some(1 << 16):
                pass

    nursery = await stack.enter_async_context(trio.open_nursery())
    stack.callback(nursery.cancel_scope.cancel)
    listeners = await nursery.start(partial(trio.serve_tcp, drop, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def main(opts) -> None:
    import trio
    srcs = [opts.daemon_src] + ([opts.against] if opts.against else [])
    names = ["trio floor", "plain floor"] + [f"daemon {src}" for src in srcs]
    figures: dict[str, list[float]] = {name: [] for name in names}
    probe = argparse.Namespace(what=opts.what, seconds=opts.seconds, baud=BAUD, py_spy="",
                               strace="", perf="")
    async with probe_rig("modemd-floor-", srcs, BAUD) as (tmp, servers, rigs, stack):
        sink_port = await _sink(stack)
        (tmp / "floor").mkdir()
        emu = await stack.enter_async_context(
            Emulator(tmp / "floor", baud=BAUD, qiact_delay=0.1, boot_delay=0.1).running())
        tag = 1000
        for _ in range(opts.rounds):
            for mode in ("trio", "plain"):
                tag += 1
                if opts.what == "up":
                    servers.expect_upload(tag)
                figure, line = await floor_round(emu, servers.port, opts, mode, tag, sink_port)
                figures[f"{mode} floor"].append(figure)
                print(f"[{mode} floor] {opts.what}: {line}", flush=True)
                await trio.sleep(0.5)
            for i, (pid, port) in enumerate(rigs):
                tag += 1
                figures[names[2 + i]].append(await one_round(
                    probe, pid, port, servers, False, tag, f"[daemon {srcs[i]}] "))
                await trio.sleep(0.5)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name}: CPU-s/MB median {medians[name]:.3f} ({min(values):.3f}-{max(values):.3f}, "
              f"{len(values)} rounds)")
    trio_floor = medians["trio floor"]
    print(f"daemon {srcs[0]} / trio floor = {medians[names[2]] / trio_floor:.2f}")
    print(f"trio floor / plain floor = {trio_floor / medians['plain floor']:.2f}")
    if opts.against:
        half = medians[names[3]] / 2
        print(f"{opts.what}: half of daemon {srcs[1]} = {half:.3f} CPU-s/MB; trio floor / that = "
              f"{trio_floor / half:.2f} (above 1: the floor alone misses the halving)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    if sys.argv[1:2] == ["--client"]:
        client_main(sys.argv[2:])
        sys.exit(0)
    from cpu_budget import BAUD
    from cpu_probe import one_round, probe_rig
    from harness import ROOT, Emulator, python_env
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="?", choices=("up", "down"), default="up")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--daemon-src", type=Path, default=ROOT)
    p.add_argument("--against", type=Path, default=None,
                   help="another checkout (e.g. the tree before issue 16): its daemon runs too")
    import trio
    trio.run(main, p.parse_args())
