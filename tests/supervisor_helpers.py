"""Shared pieces of the supervisor tests: config, an in-process power backend, a running daemon."""

from __future__ import annotations

import dataclasses
from contextlib import asynccontextmanager

import trio

from modemd.config import Config, ModemConfig, PdpConfig, PowerConfig, SupervisorConfig
from modemd.link import ModemLink
from modemd.serial import SerialDisconnected, SerialError, SerialPort
from modemd.supervisor.power import NoPowerBackend
from modemd.supervisor.states import Timings
from modemd.supervisor.supervisor import Supervisor


def make_cfg(tty: str, model: str = "bg96", **modem_kw) -> Config:
    modem_kw.setdefault("health_interval", 30.0)
    modem_kw.setdefault("health_timeout", 5.0)
    return Config(
        modem=ModemConfig(port=tty, model=model, lock_dir="", **modem_kw),
        pdp=(PdpConfig(context_id=1, apn="internet", username="user", password="s3cret-pw",
                       auth="pap"),),
        power=PowerConfig(backend="none"),
        supervisor=SupervisorConfig(healthy_reset_seconds=3600.0, reboot_jitter=0.1),
    )


class EmuPower:
    """A power backend driving the emulator in-process (what the `command` backend does by exec)."""

    name = "emulator"
    pwrkey_seconds = 2.0
    supply_off_seconds = 12.0

    def __init__(self, emu, *, supply: bool = True, pwrkey: bool = False) -> None:
        self.emu = emu
        self.has_supply = supply
        self.has_pwrkey = pwrkey
        self.calls: list[tuple[float, str]] = []

    async def supply_off(self) -> None:
        self.calls.append((trio.current_time(), "off"))
        await self.emu.power_off()

    async def supply_on(self) -> None:
        self.calls.append((trio.current_time(), "on"))
        await self.emu.power_on()

    async def pwrkey_pulse(self, seconds: float | None = None) -> None:
        self.calls.append((trio.current_time(), "pwrkey"))
        await trio.sleep(self.pwrkey_seconds if seconds is None else seconds)
        await self.emu.pwrkey()

    async def aclose(self) -> None:
        pass


class Unpluggable:
    """Opens the emulator's pty, but can pretend to be a USB tty that vanishes and comes back."""

    def __init__(self, tty: str) -> None:
        self.tty = tty
        self.present = True
        self.opens = 0
        self.port: _VanishingPort | None = None

    def __call__(self):
        if not self.present:
            raise SerialError(f"serial port {self.tty} does not exist: check modem.port")
        self.opens += 1
        self.port = _VanishingPort(SerialPort.open(self.tty, 115200, lock_dir=None))
        return self.port

    def unplug(self) -> None:
        self.present = False
        if self.port is not None:
            self.port.gone.set()

    def plug(self) -> None:
        self.present = True


class _VanishingPort:
    def __init__(self, port: SerialPort) -> None:
        self.port = port
        self.path = port.path
        self.gone = trio.Event()

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        result: list[bytes] = []
        async with trio.open_nursery() as nursery:
            async def read():
                result.append(await self.port.receive_some(max_bytes))
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            await self.gone.wait()
            nursery.cancel_scope.cancel()
        if result:
            return result[0]
        raise SerialDisconnected(f"serial port {self.path} disappeared")

    async def send_all(self, data: bytes) -> None:
        if self.gone.is_set():
            raise SerialDisconnected(f"serial port {self.path} disappeared")
        await self.port.send_all(data)

    def close(self) -> None:
        self.port.close()


@asynccontextmanager
async def running(cfg, *, power=None, open_port=None, radio=False, **kw):
    """A Supervisor running in the background; yields (sup, link). The radio task's polls stay
    off unless `radio` (registration URCs are followed either way): the other tests pin down
    exact command sequences and which command notices a silent module first."""
    link = ModemLink()
    if not radio:
        kw["timings"] = dataclasses.replace(kw.get("timings") or Timings(), radio_poll=None)
    if open_port is None:
        def open_port():
            return SerialPort.open(cfg.modem.port, 115200, lock_dir=None)
    kw.setdefault("rng", lambda: 0.0)
    sup = Supervisor(cfg, link, open_port=open_port, power=power or NoPowerBackend(), **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        yield sup, link
        nursery.cancel_scope.cancel()


async def wait_state(sup, *states, timeout: float = 3600.0) -> float:
    """Wait (in virtual time) until the supervisor enters one of `states`; returns the time."""
    with trio.fail_after(timeout):
        return await sup.wait_for_state(*states)


def visited(sup) -> list[str]:
    return [state for _, state, _ in sup.history]


def on_emulator(cfg: Config, tty: str, family: str) -> Config:
    """A parsed config, run on the emulator's pty as `family`, with no power backend."""
    return dataclasses.replace(cfg, modem=ModemConfig(port=tty, model=family, lock_dir=""),
                               power=PowerConfig(backend="none"))


def replace_modem(cfg: Config, **kw) -> Config:
    return dataclasses.replace(cfg, modem=dataclasses.replace(cfg.modem, **kw))
