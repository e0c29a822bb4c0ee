"""Hardware power control of the module: the ``gpiod``, ``command`` and ``none`` backends.

The supervisor's reboot ladder tries the software steps first (``AT+QPOWD``, ``AT+CFUN``; those are
the supervisor's job, not this module's), then "cut the supply for ``supply_off_seconds``" when a
supply line is wired, then a PWRKEY pulse (held active for ``pwrkey_seconds``, then released).
This module only drives the lines; it never talks AT.

Backends (``power.backend`` in the config):

``gpiod``
    libgpiod v2 Python bindings (PyPI ``gpiod>=2``, the ``gpio`` extra). Both lines are requested
    once, at construction, as outputs on one chip and the request is held for the daemon's lifetime
    (:meth:`GpiodPowerBackend.aclose` releases it). Lines are named (``"PWRKEY"``, resolved with
    ``Chip.line_offset_from_id``) or given as offsets. ``*_active_low`` is passed to the kernel
    through ``LineSettings(active_low=...)``, so this code only ever speaks ACTIVE/INACTIVE:

    * PWRKEY: ACTIVE = key pressed. Requested INACTIVE. A pulse is ACTIVE, sleep, INACTIVE.
    * supply: ACTIVE = module powered (an enable line, e.g. a load switch's EN pin; set
      ``supply_active_low`` when low enables it). Requested ACTIVE, so taking the line at start-up
      never cuts power.

    The line values after release are not guaranteed by the kernel: give both lines a pull resistor
    to their safe level on the board.

    **Testing:** no kernel GPIO simulation can be had on the development machine (no GPIOLIB, no
    configfs, no gpio-sim or gpio-mockup module; see docs/dependencies.md section 4). So
    ``request_lines`` and ``open_chip`` are constructor parameters; the tests pass fakes and
    check the path, consumer, OUTPUT direction, ``active_low`` and the exact ACTIVE/INACTIVE
    sequence against trio's MockClock. Only the "chip missing" path runs against the real
    bindings.

``command``
    Runs configured argv lists (``off``, ``on``, ``pwrkey_command``) with :func:`trio.run_process`,
    bounded by a timeout. A non-zero exit, a timeout or a missing executable raises
    :class:`PowerError`. The PWRKEY command gets the pulse length in ``MODEMD_PWRKEY_SECONDS``.

``none``
    Nothing wired: ``has_supply`` and ``has_pwrkey`` are False, and every action raises
    :class:`PowerError` ("no power backend configured") so a caller that ignored the flags fails
    loudly instead of believing the module was power-cycled. ``aclose`` is a no-op.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import trio

__all__ = [
    "CommandPowerBackend",
    "GpiodPowerBackend",
    "NoPowerBackend",
    "PowerBackend",
    "PowerError",
    "make_power_backend",
    "power_cycle",
]

log = logging.getLogger(__name__)

DEFAULT_CHIP = "/dev/gpiochip0"
DEFAULT_CONSUMER = "modemd"
DEFAULT_PWRKEY_SECONDS = 2.0
DEFAULT_SUPPLY_OFF_SECONDS = 12.0
DEFAULT_COMMAND_TIMEOUT = 30.0

GPIO_EXTRA_HINT = "install the gpio extra: pip install 'modemd[gpio]' or python3-libgpiod>=2"

# Variables meant for modemd itself; a power command must not inherit them.
_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


class PowerError(Exception):
    """A power action or backend set-up failed. The message is one line and names the fix."""


@runtime_checkable
class PowerBackend(Protocol):
    name: str  # "gpiod" | "command" | "none"
    has_supply: bool
    has_pwrkey: bool
    pwrkey_seconds: float
    supply_off_seconds: float

    async def supply_off(self) -> None: ...

    async def supply_on(self) -> None: ...

    async def pwrkey_pulse(self, seconds: float | None = None) -> None: ...

    async def aclose(self) -> None: ...


def _positive(value: Any, key: str, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise PowerError(f"power.{key} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise PowerError(f"power.{key} must be a positive number of seconds, got {value!r}")
    return seconds


# --------------------------------------------------------------------------- none


class NoPowerBackend:
    """No hardware power control: only the supervisor's software steps are available."""

    name = "none"
    has_supply = False
    has_pwrkey = False

    def __init__(
        self,
        pwrkey_seconds: float = DEFAULT_PWRKEY_SECONDS,
        supply_off_seconds: float = DEFAULT_SUPPLY_OFF_SECONDS,
    ) -> None:
        self.pwrkey_seconds = pwrkey_seconds
        self.supply_off_seconds = supply_off_seconds  # the supervisor says once what this means

    def _fail(self) -> None:
        raise PowerError(
            "no power backend configured: set power.backend to 'gpiod' or 'command' "
            "to let modemd cut the supply or pulse PWRKEY"
        )

    async def supply_off(self) -> None:
        self._fail()

    async def supply_on(self) -> None:
        self._fail()

    async def pwrkey_pulse(self, seconds: float | None = None) -> None:
        self._fail()

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        return "NoPowerBackend()"


# --------------------------------------------------------------------------- gpiod


def _import_gpiod() -> Any:
    try:
        import gpiod
        from gpiod.line import Direction, Value  # noqa: F401
    except ImportError:
        raise PowerError(
            f"power.backend = 'gpiod' needs libgpiod v2 bindings: {GPIO_EXTRA_HINT}"
        ) from None
    if not hasattr(gpiod, "request_lines") or not hasattr(gpiod, "LineSettings"):
        version = getattr(gpiod, "__version__", "1.x")
        raise PowerError(
            f"the installed gpiod module ({version}) is the libgpiod v1 API, modemd needs v2: "
            f"{GPIO_EXTRA_HINT}"
        )
    return gpiod


def _chip_path(chip: Any) -> str:
    if chip is None or chip == "":
        return DEFAULT_CHIP
    text = str(chip)
    if text.isdigit():  # "0" -> /dev/gpiochip0
        return f"/dev/gpiochip{text}"
    if "/" not in text:  # "gpiochip0" -> /dev/gpiochip0
        return f"/dev/{text}"
    return text


def _chip_error(path: str, exc: OSError) -> PowerError:
    if isinstance(exc, FileNotFoundError):
        return PowerError(
            f"gpio chip {path} not found: set power.chip to an existing /dev/gpiochipN "
            f"(list them with gpiodetect)"
        )
    if isinstance(exc, PermissionError):
        return PowerError(
            f"no permission to open gpio chip {path}: give the modemd user access to it "
            f'(a udev rule setting GROUP="modemd", MODE="0660" on gpiochip*)'
        )
    if exc.errno in (errno.ENODEV, errno.ENOTTY, errno.EINVAL):
        return PowerError(f"{path} is not a gpio chip: set power.chip to a /dev/gpiochipN device")
    return PowerError(f"cannot open gpio chip {path}: {exc.strerror or exc}")


class GpiodPowerBackend:
    """PWRKEY and supply lines on one GPIO chip, through libgpiod v2.

    ``request_lines`` defaults to :func:`gpiod.request_lines` (``(path, config=..., consumer=...)``
    returning an object with ``set_value(offset, Value)`` and ``release()``); ``open_chip`` defaults
    to :class:`gpiod.Chip` and is used only to resolve line names to offsets.
    """

    name = "gpiod"

    def __init__(
        self,
        chip: str | int | None = DEFAULT_CHIP,
        pwrkey: str | int | None = None,
        supply: str | int | None = None,
        *,
        pwrkey_active_low: bool = False,
        supply_active_low: bool = False,
        pwrkey_seconds: float = DEFAULT_PWRKEY_SECONDS,
        supply_off_seconds: float = DEFAULT_SUPPLY_OFF_SECONDS,
        consumer: str = DEFAULT_CONSUMER,
        request_lines: Callable[..., Any] | None = None,
        open_chip: Callable[[str], Any] | None = None,
    ) -> None:
        if pwrkey in (None, "") and supply in (None, ""):
            raise PowerError(
                "power.backend = 'gpiod' needs a line: set power.pwrkey and/or power.supply "
                "to a line name or offset (see gpioinfo)"
            )
        gpiod = _import_gpiod()
        from gpiod.line import Direction, Value

        self._active = Value.ACTIVE
        self._inactive = Value.INACTIVE
        self.path = _chip_path(chip)
        self.consumer = consumer
        self.pwrkey_seconds = pwrkey_seconds
        self.supply_off_seconds = supply_off_seconds
        self._request_lines = request_lines if request_lines is not None else gpiod.request_lines
        self._open_chip = open_chip if open_chip is not None else gpiod.Chip

        wanted = {"pwrkey": pwrkey, "supply": supply}
        offsets = self._resolve({k: v for k, v in wanted.items() if v not in (None, "")})
        self.pwrkey_offset: int | None = offsets.get("pwrkey")
        self.supply_offset: int | None = offsets.get("supply")
        if self.pwrkey_offset is not None and self.pwrkey_offset == self.supply_offset:
            raise PowerError(
                f"power.pwrkey and power.supply are the same line ({self.pwrkey_offset}) "
                f"on {self.path}: wire them to different lines"
            )
        self.has_pwrkey = self.pwrkey_offset is not None
        self.has_supply = self.supply_offset is not None

        config: dict[int, Any] = {}
        if self.pwrkey_offset is not None:
            config[self.pwrkey_offset] = gpiod.LineSettings(
                direction=Direction.OUTPUT,
                active_low=bool(pwrkey_active_low),
                output_value=Value.INACTIVE,  # key released
            )
        if self.supply_offset is not None:
            config[self.supply_offset] = gpiod.LineSettings(
                direction=Direction.OUTPUT,
                active_low=bool(supply_active_low),
                output_value=Value.ACTIVE,  # module powered: never cut power at start-up
            )
        try:
            self._request: Any = self._request_lines(self.path, config=config, consumer=consumer)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise PowerError(
                    f"gpio line(s) {sorted(config)} on {self.path} are busy: another process holds "
                    f"them (see gpioinfo); stop it or pick other lines"
                ) from None
            raise _chip_error(self.path, exc) from None
        except ValueError as exc:
            raise PowerError(f"gpio request on {self.path} rejected: {exc}") from None
        log.info(
            "gpio power lines requested on %s: pwrkey=%s supply=%s",
            self.path,
            self.pwrkey_offset,
            self.supply_offset,
        )

    def _resolve(self, ids: dict[str, str | int]) -> dict[str, int]:
        """Turn line names (or offsets given as strings) into offsets."""
        out: dict[str, int] = {}
        named: dict[str, str] = {}
        for key, ident in ids.items():
            if isinstance(ident, bool):
                raise PowerError(f"power.{key} must be a line name or offset, got {ident!r}")
            if isinstance(ident, int):
                if ident < 0:
                    raise PowerError(f"power.{key} must be a line offset >= 0, got {ident}")
                out[key] = ident
            else:
                named[key] = str(ident)
        if not named:
            return out
        try:
            chip = self._open_chip(self.path)
        except OSError as exc:
            raise _chip_error(self.path, exc) from None
        try:
            for key, ident in named.items():
                try:
                    out[key] = int(chip.line_offset_from_id(ident))
                except (OSError, ValueError):
                    raise PowerError(
                        f"gpio line {ident!r} not found on {self.path}: set power.{key} to a line "
                        f"name or offset of that chip (see gpioinfo {self.path})"
                    ) from None
        finally:
            chip.close()
        return out

    def _set(self, offset: int | None, active: bool) -> None:
        if offset is None:
            raise PowerError("gpio line not configured")  # guarded by the callers
        if self._request is None:
            raise PowerError("gpio power backend already closed")
        try:
            self._request.set_value(offset, self._active if active else self._inactive)
        except OSError as exc:
            raise PowerError(f"setting gpio line {offset} on {self.path} failed: {exc}") from None

    async def supply_off(self) -> None:
        if not self.has_supply:
            raise PowerError("no supply line wired: set power.supply")
        log.warning("cutting the module supply (gpio %s line %s)", self.path, self.supply_offset)
        self._set(self.supply_offset, False)
        await trio.lowlevel.checkpoint()

    async def supply_on(self) -> None:
        if not self.has_supply:
            raise PowerError("no supply line wired: set power.supply")
        log.info("restoring the module supply (gpio %s line %s)", self.path, self.supply_offset)
        self._set(self.supply_offset, True)
        await trio.lowlevel.checkpoint()

    async def pwrkey_pulse(self, seconds: float | None = None) -> None:
        """Hold PWRKEY active for ``seconds`` (default ``pwrkey_seconds``), then release it.

        The key is released even when the sleep is cancelled (the release is a plain ioctl).
        """
        if not self.has_pwrkey:
            raise PowerError("no PWRKEY line wired: set power.pwrkey")
        hold = self.pwrkey_seconds if seconds is None else seconds
        log.warning(
            "pulsing PWRKEY for %.1f s (gpio %s line %s)", hold, self.path, self.pwrkey_offset
        )
        self._set(self.pwrkey_offset, True)
        try:
            await trio.sleep(hold)
        finally:
            self._set(self.pwrkey_offset, False)

    async def aclose(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            try:
                request.release()
            except OSError as exc:  # pragma: no cover - the kernel does not fail a release
                log.warning("releasing gpio lines on %s failed: %s", self.path, exc)
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return (
            f"GpiodPowerBackend(path={self.path!r}, pwrkey={self.pwrkey_offset}, "
            f"supply={self.supply_offset})"
        )


# --------------------------------------------------------------------------- command


def _argv(value: Any, key: str) -> list[str] | None:
    if value is None or value == "" or value == [] or value == ():
        return None
    if isinstance(value, str):
        argv = shlex.split(value)
    elif isinstance(value, Sequence):
        argv = [os.fspath(x) if isinstance(x, os.PathLike) else str(x) for x in value]
    else:
        raise PowerError(f"power.{key} must be a command as a list of strings, got {value!r}")
    if not argv or not argv[0]:
        raise PowerError(f"power.{key} must be a non-empty command, got {value!r}")
    return argv


def _tail(data: bytes | None, limit: int = 300) -> str:
    text = (data or b"").decode("utf-8", "replace").strip()
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return text[-limit:]


class CommandPowerBackend:
    """Power control by running commands (a relay tool, a BMC, ``gpioset``...)."""

    name = "command"

    def __init__(
        self,
        off: Sequence[str] | str | None = None,
        on: Sequence[str] | str | None = None,
        pwrkey_command: Sequence[str] | str | None = None,
        *,
        pwrkey_seconds: float = DEFAULT_PWRKEY_SECONDS,
        supply_off_seconds: float = DEFAULT_SUPPLY_OFF_SECONDS,
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> None:
        self.off = _argv(off, "off")
        self.on = _argv(on, "on")
        self.pwrkey_command = _argv(pwrkey_command, "pwrkey_command")
        if (self.off is None) != (self.on is None):
            raise PowerError("power.off and power.on must be set together (or neither)")
        if self.off is None and self.pwrkey_command is None:
            raise PowerError(
                "power.backend = 'command' needs power.off and power.on, or power.pwrkey_command"
            )
        self.has_supply = self.off is not None and self.on is not None
        self.has_pwrkey = self.pwrkey_command is not None
        self.pwrkey_seconds = pwrkey_seconds
        self.supply_off_seconds = supply_off_seconds
        self.timeout = timeout

    async def _run(
        self, argv: list[str], what: str, extra_env: dict[str, str] | None = None
    ) -> None:
        shown = shlex.join(argv)
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        if extra_env:
            env.update(extra_env)
        log.info("power %s: running %s", what, shown)
        result = None
        with trio.move_on_after(self.timeout):
            try:
                result = await trio.run_process(
                    argv,
                    stdin=subprocess.DEVNULL,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                )
            except FileNotFoundError:
                raise PowerError(
                    f"power {what} command not found: {shown} (fix power.{_KEYS[what]})"
                ) from None
            except PermissionError:
                raise PowerError(
                    f"power {what} command not executable: {shown} (fix power.{_KEYS[what]})"
                ) from None
        if result is None:
            raise PowerError(f"power {what} command timed out after {self.timeout:g} s: {shown}")
        if result.returncode != 0:
            status = (
                f"signal {-result.returncode}"
                if result.returncode < 0
                else f"status {result.returncode}"
            )
            detail = _tail(result.stderr) or _tail(result.stdout) or "no output"
            raise PowerError(f"power {what} command failed with exit {status}: {shown}: {detail}")
        if result.stdout:
            log.debug("power %s output: %s", what, _tail(result.stdout))

    async def supply_off(self) -> None:
        if self.off is None:
            raise PowerError("no supply command wired: set power.off and power.on")
        log.warning("cutting the module supply")
        await self._run(self.off, "off")

    async def supply_on(self) -> None:
        if self.on is None:
            raise PowerError("no supply command wired: set power.off and power.on")
        await self._run(self.on, "on")

    async def pwrkey_pulse(self, seconds: float | None = None) -> None:
        """Run ``pwrkey_command``; it gets the hold time in ``MODEMD_PWRKEY_SECONDS``."""
        if self.pwrkey_command is None:
            raise PowerError("no PWRKEY command wired: set power.pwrkey_command")
        hold = self.pwrkey_seconds if seconds is None else seconds
        await self._run(self.pwrkey_command, "pwrkey", {"MODEMD_PWRKEY_SECONDS": f"{hold:g}"})

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"CommandPowerBackend(has_supply={self.has_supply}, has_pwrkey={self.has_pwrkey})"


_KEYS = {"off": "off", "on": "on", "pwrkey": "pwrkey_command"}


# --------------------------------------------------------------------------- factory


def make_power_backend(
    power_cfg: Any,
    *,
    request_lines: Callable[..., Any] | None = None,
    open_chip: Callable[[str], Any] | None = None,
) -> PowerBackend:
    """Build the backend named by ``power_cfg.backend`` (any object with the config attributes).

    ``None`` (no ``[power]`` section) gives the ``none`` backend. The ``gpiod`` backend requests its
    lines here, so a wrong chip or line name fails at start-up with a :class:`PowerError`.
    """
    get = getattr
    backend = str(get(power_cfg, "backend", None) or "none").strip().lower()
    pwrkey_seconds = _positive(
        get(power_cfg, "pwrkey_seconds", None), "pwrkey_seconds", DEFAULT_PWRKEY_SECONDS
    )
    off_seconds = _positive(
        get(power_cfg, "supply_off_seconds", None), "supply_off_seconds", DEFAULT_SUPPLY_OFF_SECONDS
    )
    if backend == "none":
        return NoPowerBackend(pwrkey_seconds=pwrkey_seconds, supply_off_seconds=off_seconds)
    if backend == "gpiod":
        return GpiodPowerBackend(
            chip=get(power_cfg, "chip", None),
            pwrkey=get(power_cfg, "pwrkey", None),
            supply=get(power_cfg, "supply", None),
            pwrkey_active_low=bool(get(power_cfg, "pwrkey_active_low", False)),
            supply_active_low=bool(get(power_cfg, "supply_active_low", False)),
            pwrkey_seconds=pwrkey_seconds,
            supply_off_seconds=off_seconds,
            request_lines=request_lines,
            open_chip=open_chip,
        )
    if backend == "command":
        pwrkey_command = get(power_cfg, "pwrkey_command", None)
        if not pwrkey_command:
            legacy = get(power_cfg, "pwrkey", None)  # pwrkey may hold the argv for this backend
            if isinstance(legacy, (list, tuple)):
                pwrkey_command = legacy
        timeout = _positive(
            get(power_cfg, "command_timeout", None), "command_timeout", DEFAULT_COMMAND_TIMEOUT
        )
        return CommandPowerBackend(
            off=get(power_cfg, "off", None),
            on=get(power_cfg, "on", None),
            pwrkey_command=pwrkey_command,
            pwrkey_seconds=pwrkey_seconds,
            supply_off_seconds=off_seconds,
            timeout=timeout,
        )
    raise PowerError(f"power.backend = {backend!r} is unknown: use 'gpiod', 'command' or 'none'")


# --------------------------------------------------------------------------- helper


async def power_cycle(
    backend: PowerBackend,
    off_seconds: float | None = None,
    *,
    pwrkey_after_supply: bool = False,
) -> str:
    """Power-cycle the module with whatever hardware control is wired; return what was done.

    With a supply: supply off, sleep ``off_seconds`` (default: the backend's
    ``supply_off_seconds``, 12 s), supply on, then a PWRKEY pulse if ``pwrkey_after_supply`` and a
    PWRKEY is wired (modules without auto power-on stay off after the supply returns). The supply is
    turned back on even when this is cancelled during the off period (shielded ``finally``).
    Without a supply: a PWRKEY pulse. With neither: :class:`PowerError`.
    Nothing is released; the backend stays usable. Returns ``"supply"`` or ``"pwrkey"``.
    """
    if backend.has_supply:
        if off_seconds is None:
            off_seconds = getattr(backend, "supply_off_seconds", DEFAULT_SUPPLY_OFF_SECONDS)
        await backend.supply_off()
        try:
            await trio.sleep(off_seconds)
        finally:
            with trio.CancelScope(shield=True):
                await backend.supply_on()
        if pwrkey_after_supply and backend.has_pwrkey:
            await backend.pwrkey_pulse()
        return "supply"
    if backend.has_pwrkey:
        await backend.pwrkey_pulse()
        return "pwrkey"
    raise PowerError(
        "no hardware power control wired: set power.backend with power.supply/power.off+on "
        "or power.pwrkey/power.pwrkey_command"
    )
