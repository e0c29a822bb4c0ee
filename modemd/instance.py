"""Instances: several modemd on one gateway (one per modem), as the unit template modemd@NAME.

One source for where an instance's files are, shared by the daemon, the config defaults and
modemctl (standard library only: modemctl must run under any python3).
"""

from __future__ import annotations

import os
import re

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RUN_DIR = "/run/modemd"
CONFIG_DIR = "/etc/modemd"
STATE_DIR = "/var/lib/modemd"


def check_instance(name: str) -> str:
    """The name itself, or ValueError with one line naming the rule."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"instance name {name!r} must be 1-64 letters, digits, '_', '.' or '-' "
            "(starting with a letter or digit), e.g. modem1"
        )
    return name


def control_socket(instance: str = "") -> str:
    """The default control socket: /run/modemd/control.sock, /run/modemd/NAME/control.sock."""
    return f"{RUN_DIR}/{instance}/control.sock" if instance else f"{RUN_DIR}/control.sock"


def config_file(instance: str = "") -> str:
    """The default configuration: /etc/modemd/modemd.toml, /etc/modemd/NAME.toml."""
    return f"{CONFIG_DIR}/{instance}.toml" if instance else f"{CONFIG_DIR}/modemd.toml"


def state_dir(instance: str = "") -> str:
    """Where modemd keeps what must survive a restart (the SIM's rejected PINs): systemd's
    $STATE_DIRECTORY (StateDirectory=), else /var/lib/modemd[/NAME]."""
    given = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if given:
        return given
    return f"{STATE_DIR}/{instance}" if instance else STATE_DIR
