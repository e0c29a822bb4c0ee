"""Value kinds: how one TOML value is checked and converted, and the text of its problems.

Each kind's ``parse(value, at)`` returns the field value or raises ValueError (the engine puts the
key path in front) or ConfigError (lines that already carry it).  ``at.secret`` keeps the value
out of the text.
"""

from __future__ import annotations

import grp
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .endpoints import ENDPOINT_KINDS, check_unix_path, parse_endpoint, parse_remote
from .errors import fmt_num, got, range_text, show, typename
from .schema import At, Derived

_MODE_RE = re.compile(r"0?[0-7]{3}\Z")


def _in_range(value: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


@dataclass(frozen=True)
class Str:
    """A string, optionally one of ``choices`` and passing ``check(value, key)`` (which raises
    ValueError; the validators of modemd.validate fit: they name the key they are given)."""

    choices: tuple[str, ...] | None = None
    check: Callable[[str, str], Any] | None = None

    def parse(self, value: Any, at: At) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, {got(value, at.secret)}")
        if self.choices is not None and value not in self.choices:
            shown = "" if at.secret else f", got {show(value)}"
            raise ValueError(f"must be one of {', '.join(self.choices)}{shown}")
        if self.check is not None:
            self.check(value, at.key)
        return value


@dataclass(frozen=True)
class Bool:
    def parse(self, value: Any, at: At) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, {got(value, at.secret)}")
        return value


@dataclass(frozen=True)
class Int:
    """An integer within ``lo..hi`` or one of ``choices``."""

    lo: int | None = None
    hi: int | None = None
    choices: tuple[int, ...] | None = None

    def parse(self, value: Any, at: At) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, {got(value, at.secret)}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {value}")
        if not _in_range(value, self.lo, self.hi):
            raise ValueError(f"{range_text(self.lo, self.hi)}, got {value}")
        return value


@dataclass(frozen=True)
class Num:
    """A float (TOML integers accepted) within ``lo..hi``; ``lo_open``: strictly above lo."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def parse(self, value: Any, at: At) -> float:
        lo, hi = self.lo, self.hi
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, {got(value, at.secret)}")
        try:
            number = float(value)
        except OverflowError:  # a TOML integer beyond the float range
            raise ValueError(f"{range_text(lo, hi)}, got {show(value)}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {number}")
        if self.lo_open and lo is not None and number <= lo:
            upper = f" and at most {fmt_num(hi)}" if hi is not None else ""
            raise ValueError(f"must be greater than {fmt_num(lo)}{upper}, got {fmt_num(number)}")
        if not _in_range(number, lo, hi):
            raise ValueError(f"{range_text(lo, hi)}, got {fmt_num(number)}")
        return number


@dataclass(frozen=True)
class Argv:
    """A command's argv: a non-empty program name, no NUL bytes."""

    def parse(self, value: Any, at: At) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            raise ValueError(
                "must be an array of strings (a command's argv, e.g. "
                f'["/usr/local/bin/modem-power", "off"]), {got(value, at.secret)}'
            )
        if value and not value[0]:
            raise ValueError("the program name (first element) must not be empty")
        if any("\0" in a for a in value):
            raise ValueError("arguments must not contain NUL bytes")
        return tuple(value)


@dataclass(frozen=True)
class Mode:
    """Unix permission bits as an octal string: a TOML integer would be read as decimal."""

    def parse(self, value: Any, at: At) -> int:
        if not isinstance(value, str):
            raise ValueError(
                'must be an octal string such as "0660" (a TOML integer would be read as '
                f"decimal), {got(value, at.secret)}"
            )
        if not _MODE_RE.match(value):
            raise ValueError(
                f'must be an octal permission string such as "0660", got {show(value)}'
            )
        return int(value, 8)


@dataclass(frozen=True)
class Group:
    """A group name (or numeric gid) that must exist here; "" = none.  Sets ``gid`` too."""

    def parse(self, value: Any, at: At) -> Derived:
        name = Str().parse(value, at)
        if not name:
            return Derived("", {"gid": None})
        try:
            if name.isdigit():
                return Derived(name, {"gid": grp.getgrgid(int(name)).gr_gid})
            return Derived(name, {"gid": grp.getgrnam(name).gr_gid})
        except (KeyError, OverflowError, ValueError):  # ValueError: "²".isdigit(), NUL bytes
            raise ValueError(f"group {show(name)} does not exist on this system") from None


@dataclass(frozen=True)
class GpioLine:
    """A gpiod line: a name (string) or an offset (integer >= 0); ``optional``: "" = None."""

    optional: bool = False

    def parse(self, value: Any, at: At) -> str | int | None:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if value == "" and self.optional:
            return None
        raise ValueError(
            f"must be a GPIO line name or an offset >= 0, got {typename(value)} {show(value)}"
        )


@dataclass(frozen=True)
class EndpointKind:
    """A local listen/target address; ``empty_none``: "" disables it (None)."""

    kinds: tuple[str, ...] = ENDPOINT_KINDS
    default_kind: str | None = None
    empty_none: bool = False

    def parse(self, value: Any, at: At) -> Any:
        if value == "" and self.empty_none:
            return None
        return parse_endpoint(value, at.key, kinds=self.kinds, default_kind=self.default_kind)


@dataclass(frozen=True)
class Remote:
    """``host:port`` the module connects to; sets ``<field>_port`` beside ``<field>_host``."""

    port_field: str

    def parse(self, value: Any, at: At) -> Derived:
        host, port = parse_remote(value, at.key)
        return Derived(host, {self.port_field: port})


@dataclass(frozen=True)
class UnixPath:
    """An absolute socket path (``unix:`` prefix allowed); "" = none."""

    def parse(self, value: Any, at: At) -> str:
        path = Str().parse(value, at)
        return check_unix_path(path.removeprefix("unix:"), at.key) if path else ""


@dataclass(frozen=True)
class SecretFile:
    """A file holding a secret (``what``), relative to the config file's directory.

    Sets ``into`` to its content: read at most ``limit`` bytes (a path such as /dev/zero must not
    eat memory), ``clean`` trims it, ``check(text, key)`` validates it (raises ValueError whose
    message starts with the key; the secret itself never appears in the text).
    """

    into: str
    what: str
    limit: int
    clean: Callable[[bytes], bytes]
    check: Callable[[bytes, str], str]

    def parse(self, value: Any, at: At) -> Derived:
        name = Str().parse(value, at)
        if not name:
            return Derived("", {})
        path = at.ctx.base_dir / name
        return Derived(str(path), {self.into: self._read(path, at.key)})

    def _read(self, path: Path, key: str) -> str:
        if "\0" in str(path):
            raise ValueError("the path contains a NUL byte")
        try:
            with path.open("rb") as f:
                raw = f.read(self.limit)
        except FileNotFoundError:
            raise ValueError(f"cannot read {str(path)!r}: no such file") from None
        except PermissionError:
            raise ValueError(
                f"cannot read {str(path)!r}: permission denied (the daemon's user must be able "
                "to read it)"
            ) from None
        except OSError as exc:
            raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        try:
            return self.check(self.clean(raw), key)
        except ValueError as exc:
            msg = str(exc).removeprefix(f"{key}: ")
            raise ValueError(f"the {self.what} in {str(path)!r} {msg}") from None
