"""Test side of the pty: talks raw AT bytes, exactly as a daemon would see the module.

Deliberately independent of `modemd.at`: a tiny line splitter and nothing else.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import serial
import trio

from modemd.emulator import Emulator, EmulatorConfig

FINALS = ("OK", "ERROR", "+CME ERROR", "SEND OK", "SEND FAIL", "CONNECT", "NO CARRIER")


class Port:
    """The daemon's end of the emulator's pty, opened with pyserial like the daemon does."""

    def __init__(self, path: str, baud: int = 115200) -> None:
        self.ser = serial.Serial(path, baud, timeout=None, exclusive=True)
        self.fd = self.ser.fileno()  # O_NONBLOCK, VMIN=0: an empty read returns b""
        self.buf = bytearray()
        self.seen: list[str] = []  # every line consumed so far

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.fd)
        self.ser.close()

    async def _fill(self) -> None:
        await trio.lowlevel.wait_readable(self.fd)
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            data = b""
        self.buf += data

    async def write(self, data: bytes) -> None:
        mv = memoryview(data)
        while mv:
            try:
                n = os.write(self.fd, mv)
            except BlockingIOError:
                n = 0
            if n:
                mv = mv[n:]
            else:
                await trio.lowlevel.wait_writable(self.fd)

    async def expect(self, pattern: bytes, timeout: float = 5) -> bytes:
        """Everything up to and including `pattern` (consumed)."""
        with trio.fail_after(timeout):
            while True:
                i = self.buf.find(pattern)
                if i >= 0:
                    out = bytes(self.buf[: i + len(pattern)])
                    del self.buf[: i + len(pattern)]
                    return out
                await self._fill()

    async def read_exact(self, n: int, timeout: float = 5) -> bytes:
        with trio.fail_after(timeout):
            while len(self.buf) < n:
                await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def drain(self, quiet: float = 0.1) -> bytes:
        """Whatever arrives until the line has been quiet for `quiet` seconds."""
        while True:
            before = len(self.buf)
            with trio.move_on_after(quiet):
                await self._fill()
            if len(self.buf) == before:
                out = bytes(self.buf)
                self.buf.clear()
                return out

    async def line(self, timeout: float = 5) -> str:
        """The next non-empty line (CR LF / CR framed)."""
        with trio.fail_after(timeout):
            while True:
                while self.buf[:1] in (b"\r", b"\n"):
                    del self.buf[:1]
                for i, b in enumerate(self.buf):
                    if b in (13, 10):
                        text = bytes(self.buf[:i]).decode("latin-1")
                        end = i + 2 if self.buf[i : i + 2] == b"\r\n" else i + 1
                        del self.buf[:end]
                        self.seen.append(text)
                        return text
                await self._fill()

    async def urc(self, prefix: str, timeout: float = 5) -> str:
        """Skip lines until one starts with `prefix`."""
        with trio.fail_after(timeout):
            while True:
                text = await self.line(timeout)
                if text.startswith(prefix):
                    return text

    async def cmd(self, command: str, timeout: float = 5, echo: bool = True) -> list[str]:
        """Send one command line; the lines up to and including the final result (echo removed)."""
        await self.write(command.encode("latin-1") + b"\r")
        lines: list[str] = []
        echo_pending = echo
        with trio.fail_after(timeout):
            while True:
                text = await self.line(timeout)
                if echo_pending and text == command:
                    echo_pending = False
                    continue
                lines.append(text)
                if text.startswith(FINALS):
                    return lines

    async def ok(self, command: str, timeout: float = 5) -> list[str]:
        lines = await self.cmd(command, timeout)
        assert lines[-1] == "OK", (command, lines)
        return lines[:-1]

    async def send(self, cid: int, payload: bytes, timeout: float = 5) -> str:
        """AT+QISEND=<cid>,<len>, the prompt, the payload; returns SEND OK / SEND FAIL / ERROR."""
        command = f"AT+QISEND={cid},{len(payload)}"
        await self.write(command.encode() + b"\r")
        head = await self.expect(b"> ", timeout)
        assert b"ERROR" not in head, head
        await self.write(payload)
        with trio.fail_after(timeout):
            while True:
                text = await self.line(timeout)
                if text in ("SEND OK", "SEND FAIL", "ERROR", "OK"):
                    return text

    async def read(self, cid: int, length: int = 1500, timeout: float = 5) -> bytes:
        """AT+QIRD=<cid>,<len>: the payload (b"" for +QIRD: 0)."""
        await self.write(f"AT+QIRD={cid},{length}\r".encode())
        await self.expect(b"+QIRD: ", timeout)
        header = await self.expect(b"\r\n", timeout)
        n = int(header.split(b",")[0])
        data = await self.read_exact(n, timeout) if n else b""
        tail = await self.expect(b"OK\r\n", timeout)
        assert tail.replace(b"\r\n", b"") in (b"OK",), tail
        return data


@asynccontextmanager
async def modem(**kw):
    """An emulator plus an open port, after the boot URCs have been read."""
    kw.setdefault("boot_delay", 0.01)
    kw.setdefault("qiact_delay", 0.01)
    power_on = kw.pop("power_on", True)
    cfg = EmulatorConfig(power_on=False, **kw)
    async with Emulator.open(cfg) as emu:
        port = Port(emu.tty_path)
        try:
            if power_on:
                await emu.power_on()
                last = emu.family.boot_urcs[-1] if cfg.sim_ready else "+CPIN: NOT INSERTED"
                boot = await port.expect(last.encode() + b"\r\n")
                port.seen += [x for x in boot.decode("latin-1").split("\r\n") if x]
            yield emu, port
        finally:
            port.close()


async def activate(port: Port, ctx: int = 1, ctype: int = 1) -> None:
    await port.ok(f'AT+QICSGP={ctx},{ctype},"internet","",""')
    await port.ok(f"AT+QIACT={ctx}")


@asynccontextmanager
async def tcp_server(host: str = "127.0.0.1", rcvbuf: int = 0):
    """A real loopback TCP server; yields (port, receive channel of accepted streams)."""
    sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET)
    if rcvbuf:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
    await sock.bind((host, 0))
    sock.listen(16)
    listener = trio.SocketListener(sock)
    send, recv = trio.open_memory_channel(100)
    streams = []

    async def accept_loop():
        while True:
            stream = await listener.accept()
            streams.append(stream)
            await send.send(stream)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_loop)
            try:
                yield sock.getsockname()[1], recv
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for stream in streams:
            stream.socket.close()
        sock.close()


async def recv_exact(stream: trio.SocketStream, n: int, timeout: float = 5) -> bytes:
    out = bytearray()
    with trio.fail_after(timeout):
        while len(out) < n:
            chunk = await stream.receive_some(n - len(out))
            if not chunk:
                break
            out += chunk
    return bytes(out)


async def open_client(
    port: Port, cid: int, server_port: int, mode: int = 0, host: str = "127.0.0.1"
) -> str:
    await port.ok(f'AT+QIOPEN=1,{cid},"TCP","{host}",{server_port},0,{mode}')
    return await port.urc(f"+QIOPEN: {cid},")
