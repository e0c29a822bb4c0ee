"""Shared fixtures: a real emulator on a real pty, and the daemon's AT stack opened on it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from modemd.at.channel import AtChannel
from modemd.at.commands import QuectelAt
from modemd.profiles import get_profile
from modemd.serial import SerialPort

from .quiet_clock import quiet_clock

FAMILIES = ["bg95", "generic", "bc25", "bg96", "rg500u"]

@pytest.fixture
def mock_clock():
    """Virtual time that never jumps while a byte is on its way over a pty (tests/quiet_clock.py)."""
    return quiet_clock()


@dataclass
class Stack:
    emulator: object
    port: SerialPort
    channel: AtChannel
    at: QuectelAt


@asynccontextmanager
async def open_stack(family: str = "bg96", *, boot: bool = True, **emu_kw):
    """Emulator + SerialPort + AtChannel + QuectelAt, with the module booted and echo off."""
    from modemd.emulator import Emulator, EmulatorConfig

    emu_kw.setdefault("boot_delay", 0.01)
    emu_kw.setdefault("qiact_delay", 0.01)
    cfg = EmulatorConfig(family=family, **emu_kw)
    async with Emulator.open(cfg) as emu:
        port = SerialPort.open(emu.tty_path, 115200, lock_dir=None)
        channel = AtChannel(port)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(channel.run)
                at = QuectelAt(channel, get_profile(family))
                if boot:
                    await wait_answering(at)
                    await at.run("ATE0")
                    await at.run("AT+CMEE=1")
                yield Stack(emu, port, channel, at)
                nursery.cancel_scope.cancel()
        finally:
            port.close()


async def wait_answering(at: QuectelAt, attempts: int = 50) -> None:
    """Probe until the module answers or prints RDY (it ignores input while booting), as the
    supervisor's wait_ready does: with the channel's attributed probe, so a probe that crossed the module's
    RDY and is answered after it can never lend its OK to the next command (a plain `AT` here
    once did: ATE0 took the late OK, and every answer after it came one command late)."""
    from modemd.at.channel import AtModuleReset

    for _ in range(attempts):
        try:
            if await at.probe(0.5):
                return
        except AtModuleReset:
            return  # its RDY: the module is up (a second probe could pay for the first one)
    raise AssertionError("emulator never answered AT")


@pytest.fixture
async def stack():
    async with open_stack("bg96") as s:
        yield s


# -- bytes whose SHA-256 (or exact content) a test checked end to end (docs/reliability.md) ----------
SHA_CHECKED = [0]


def count_sha_bytes(n: int) -> None:
    """Add `n` bytes a test moved through modemd and verified; the total is printed at the end."""
    SHA_CHECKED[0] += n


def pytest_terminal_summary(terminalreporter):
    if SHA_CHECKED[0]:
        terminalreporter.write_line(
            f"data promise: {SHA_CHECKED[0]:,} bytes moved through modemd and SHA-256 checked"
        )


def source_readable_by_others() -> bool:
    """Tests that run modemctl as `nobody` import modemd from this checkout: every directory up
    to it must be world-searchable (a clone inside a 0700 `mktemp -d` directory is not)."""
    import os
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "modemd"
    dirs = [package, *package.parents]
    return all(d.stat().st_mode & 0o001 for d in dirs) and bool(package.stat().st_mode & 0o004) \
        and os.access(package, os.R_OK)
