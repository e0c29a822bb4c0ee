"""The entry points: TOML text or file -> :class:`Config`, or the list of every problem."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checks import cross_checks
from .errors import ConfigError, typename
from .schema import Context, read_table
from .sections import Config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def _loads(text: str | bytes, source: str) -> dict[str, Any]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{source}: not valid UTF-8 (byte offset {exc.start}); save the file as UTF-8"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{source}: invalid TOML: {exc}; fix the file at that line and column "
            "(see config/modemd.toml for the expected layout)"
        ) from None
    except RecursionError:  # tomllib recurses once per nested array / inline table
        raise ConfigError(
            f"{source}: invalid TOML: arrays or inline tables nested too deeply"
        ) from None


def parse_config(
    data: Mapping[str, Any] | str | bytes,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    emulate: bool = False,
    source: str = "<config>",
    instance: str = "",
) -> Config:
    """Build a :class:`Config` from a parsed TOML mapping or TOML text.

    Raises :class:`ConfigError` listing every problem.  ``base_dir`` anchors relative file
    names (``pdp.password_file``); ``emulate`` makes ``modem.port`` optional; ``source``
    names the text in TOML syntax errors; ``instance`` (modemd@NAME) moves the default control
    socket to /run/modemd/NAME/control.sock.
    """
    if isinstance(data, (str, bytes)):
        data = _loads(data, source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the configuration must be a table, got {typename(data)}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    ctx = Context(base, emulate=emulate, instance=instance)
    cfg = read_table(Config, data, "", ctx)
    assert cfg is not None  # every Config field has a default
    cross_checks(cfg, ctx)
    if ctx.errors:
        raise ConfigError(ctx.errors)
    return cfg


def load_config(
    path: str | os.PathLike[str], *, emulate: bool = False, instance: str = ""
) -> Config:
    """Read and validate a TOML configuration file (raises :class:`ConfigError`)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file; create it (config/modemd.toml in the source tree is a "
            "commented example) or pass another path with --config"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory; give the path of the TOML file") from None
    except PermissionError:
        raise ConfigError(
            f"{p}: permission denied; make it readable by the daemon's user (or run as root)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    data = _loads(raw, str(p))
    return parse_config(data, base_dir=p.parent, emulate=emulate, source=str(p), instance=instance)


def check_config(path: str | os.PathLike[str], *, emulate: bool = False) -> list[str]:
    """All problems of a configuration file, one line each; ``[]`` when it is valid."""
    try:
        load_config(path, emulate=emulate)
    except ConfigError as exc:
        return exc.errors
    return []
