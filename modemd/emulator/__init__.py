"""A simulated Quectel module on a pty, for tests, benchmarks and `modemd --emulate`.

    from modemd.emulator import Emulator, EmulatorConfig
    async with Emulator.open(EmulatorConfig(family="bg96")) as emu:
        ...  # open emu.tty_path like a serial port

It never imports the daemon's AT layer or profiles: it has its own parser and family table.
Real sockets behind AT+QIOPEN only ever reach loopback addresses.
"""

from .config import ConfigError, EmulatorConfig
from .core import Emulator
from .families import FAMILIES

__all__ = ["Emulator", "EmulatorConfig", "ConfigError", "FAMILIES"]
