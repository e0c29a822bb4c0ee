"""TOML configuration -> frozen dataclasses, every error with its key path.

Public API::

    cfg = load_config(path)                    # raises ConfigError listing EVERY problem
    cfg = parse_config(data_or_toml_text, base_dir=None, emulate=False)
    errors = check_config(path)                # [] when valid (for `modemd check-config FILE`)
    ep = parse_endpoint("tcp:[::1]:1883", "forward[0].listen")     # raises ConfigError
    host, port = parse_remote("broker.example.com:8883", "forward[0].remote")

``ConfigError.errors`` is the list of lines; ``str(ConfigError)`` joins them with newlines.
Each line reads ``"<key path>: <problem>"``, e.g. ``"modem.baudrate: must be one of 9600, ...,
got 12345"`` or ``"forward[0].lisen: unknown key; did you mean 'listen'?"``.

Secrets (``pdp.username``, ``pdp.password``, ``sim.pin`` and the content of ``pdp.password_file``
and ``sim.pin_file``) never
appear in a repr, in ``str()`` of a config object or in an error message.  Note that
``dataclasses.asdict()`` does return them: never log its result.

With ``emulate=True`` ``modem.port`` may be left out (``""``); the caller substitutes the
emulator's pty: ``dataclasses.replace(cfg, modem=dataclasses.replace(cfg.modem, port=pty))``.

Relative ``pdp.password_file`` and ``sim.pin_file`` paths are taken relative to ``base_dir`` (``load_config`` uses
the config file's directory, ``parse_config`` the current directory unless told otherwise).
Unix socket paths must be absolute.

The package: ``schema.py`` (the engine: field metadata -> parsing, key paths, defaults, errors),
``kinds.py`` (value kinds), ``sections.py`` (the dataclasses: the schema itself), ``endpoints.py``,
``checks.py`` (rules across sections), ``load.py`` (entry points), ``errors.py``.
"""

from __future__ import annotations

from modemd.at.commands import AUTH, IP_TYPES

from .endpoints import ENDPOINT_KINDS, UNIX_PATH_MAX, Endpoint, parse_endpoint, parse_remote
from .errors import ConfigError
from .load import check_config, load_config, parse_config
from .sections import (
    BAUDRATES,
    CONTEXT_ID_RANGE,
    LOG_LEVELS,
    MODELS,
    NAME_PATTERN,
    POWER_BACKENDS,
    Config,
    ControlConfig,
    ForwardConfig,
    ListenConfig,
    LogConfig,
    MetricsConfig,
    ModemConfig,
    PdpConfig,
    PowerConfig,
    ProxyConfig,
    SimConfig,
    SocksConfig,
    SupervisorConfig,
)

#: pdp.auth -> <authentication> of AT+QICSGP; the one source is modemd.at.commands.AUTH
AUTH_MODES = AUTH

__all__ = [
    "AUTH_MODES", "BAUDRATES", "CONTEXT_ID_RANGE", "ENDPOINT_KINDS", "IP_TYPES", "LOG_LEVELS",
    "MODELS", "NAME_PATTERN", "POWER_BACKENDS", "UNIX_PATH_MAX", "Config", "ConfigError",
    "ControlConfig", "Endpoint", "ForwardConfig", "ListenConfig", "LogConfig", "MetricsConfig",
    "ModemConfig", "PdpConfig", "PowerConfig", "ProxyConfig", "SimConfig", "SocksConfig",
    "SupervisorConfig", "check_config", "load_config", "parse_config", "parse_endpoint",
    "parse_remote",
]  # fmt: skip
