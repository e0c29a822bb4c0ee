"""The emulator's end of a pseudo-terminal, driven natively by trio (no threads).

The slave is put in raw mode and kept open by the emulator for its whole life, so the master never
sees EIO when the daemon closes and reopens the slave path. The master is non-blocking; reads and
writes wait with `trio.lowlevel.wait_readable/wait_writable`.
"""

from __future__ import annotations

import errno
import os
import tty

import trio


class Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        try:
            tty.setraw(self.slave)
            os.set_blocking(self.master, False)
            self.path = os.ttyname(self.slave)
        except BaseException:
            os.close(self.master)
            os.close(self.slave)
            raise
        self.closed = False

    async def read_some(self, max_bytes: int) -> bytes:
        """Bytes the daemon wrote to the slave (waits until there are some)."""
        while True:
            try:
                data = os.read(self.master, max_bytes)
            except BlockingIOError:
                data = b""
            except OSError as exc:  # EIO: no slave open (cannot happen while we hold it)
                if exc.errno != errno.EIO:
                    raise
                data = b""
                await trio.sleep(0.05)
                continue
            if data:
                await trio.lowlevel.checkpoint()
                return data
            await trio.lowlevel.wait_readable(self.master)

    async def write_all(self, data: bytes | memoryview) -> None:
        mv = memoryview(data)
        while mv:
            try:
                n = os.write(self.master, mv)
            except BlockingIOError:
                n = 0
            if n:
                mv = mv[n:]
            else:
                await trio.lowlevel.wait_writable(self.master)
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self.master, self.slave):
            try:
                trio.lowlevel.notify_closing(fd)
            except RuntimeError:  # outside trio
                pass
            os.close(fd)
