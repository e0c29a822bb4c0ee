"""Reload: what changed between two configurations, and how each change is applied (sans-IO).

`diff()` walks the `Config` dataclasses generically: a top-level field is a TOML table (`[pdp]`), or
an array of tables (`[[forward]]`, matched by `name`), and each of their fields is one key. Every
change gets the key path the user writes (`pdp.apn`, `forward[1].remote`, `socks`). `plan()` looks
each path up in RULES: the one table that says how a key is applied while running. A key that is not
listed needs a restart, so a new key is never "applied" silently by omission: the reload fails and
nothing of the new file is used.

Adding a way to apply keys (as `[sim]` -> `Supervisor.apply_sim()`): an `Apply` member, its RULES
rows, and its applier in `Daemon._reload` (the `appliers` table there).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any


class Apply(enum.Enum):
    PROXY = "proxy"      # Proxy.reload(): only the listeners whose entry changed restart
    PDP = "pdp"          # Supervisor.apply_pdp(): QIDEACT -> QICSGP (new values) -> QIACT
    LIVE = "live"        # applied in place by the daemon
    RESTART = "restart"  # cannot change while running: the reload fails naming the key
    SIM = "sim"          # [sim] pin / pin_file -> Supervisor.apply_sim() (sim_retry)


#: section or section.key -> how it is applied; section.key wins over section; else RESTART.
RULES: dict[str, Apply] = {
    "forward": Apply.PROXY,
    "listen": Apply.PROXY,
    "socks": Apply.PROXY,
    "pdp.apn": Apply.PDP,
    "pdp.username": Apply.PDP,
    "pdp.password": Apply.PDP,
    "pdp.password_file": Apply.PDP,
    "pdp.auth": Apply.PDP,
    "pdp.ip_type": Apply.PDP,
    "pdp.dns": Apply.PDP,
    # a [[pdp]] entry added or removed (a context_id changed is both): RESTART, the keepers, the
    # stale-socket clean-up and the metrics are made per context at start.
    # pdp.context_id: the forwards, listens, SOCKS5, the stale-socket clean-up and the metrics are
    # bound to the context at start; switching contexts under them is a restart (RESTART).
    "log.level": Apply.LIVE,
    "sim": Apply.SIM,
}

#: why a key needs a restart, where one short reason helps the operator (else none is given)
WHY_RESTART: dict[str, str] = {
    "pdp.context_id": "forwards, listens and SOCKS5 are bound to the context at start",
    "pdp": "each context gets its keeper at start",
    "proxy": "the socket layer takes these at start",
    "supervisor": "the supervisor takes these at start",
}

#: Config field -> the TOML name the user writes (the table's key, or the array's name)
_NAMES = {"forwards": "forward", "listens": "listen", "remote_host": "remote",
          "remote_port": "remote", "gid": "group"}
#: a secret read from a file: its change is named by the file key when the file is used
_READ_FROM = {"pdp.password": "password_file", "sim.pin": "pin_file"}


@dataclass(frozen=True)
class Change:
    """One changed key: `path` as the user writes it; `rule` the RULES key that applies to it."""

    path: str
    rule: str


@dataclass
class Plan:
    """The changes grouped by how they are applied; `refused` has one line per key that cannot be."""

    changes: list[Change] = field(default_factory=list)
    by: dict[Apply, list[Change]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    def paths(self, how: Apply) -> list[str]:
        return [c.path for c in self.by.get(how, [])]


def diff(old: Any, new: Any) -> list[Change]:
    """Every key whose value differs between two Config dataclasses (never the values: secrets)."""
    out: list[Change] = []
    for f in fields(old):
        section = _NAMES.get(f.name, f.name)
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if section == "pdp" and len(a) == len(b) == 1:
            out += _diff_table(section, section, a[0], b[0])  # one context: `pdp.apn`
        elif isinstance(a, tuple) and isinstance(b, tuple):
            out += _diff_array(section, a, b)
        elif is_dataclass(a) and is_dataclass(b):
            out += _diff_table(section, section, a, b)
        else:  # a table that appeared or went away ([socks])
            out.append(Change(section, section))
    return _unique(out)


def _diff_table(section: str, path: str, a: Any, b: Any) -> list[Change]:
    if not (is_dataclass(a) and is_dataclass(b)):
        return [Change(path, section)]
    out = []
    for f in fields(a):
        if getattr(a, f.name) == getattr(b, f.name):
            continue
        key = _NAMES.get(f.name, f.name)
        source = _READ_FROM.get(f"{section}.{key}")
        if source is not None and (getattr(a, source, "") or getattr(b, source, "")):
            key = source  # read from a file: name the file key (its content changed)
        out.append(Change(f"{path}.{key}", f"{section}.{key}"))
    return out


def _diff_array(section: str, a: tuple, b: tuple) -> list[Change]:
    """Entries matched by name ([[pdp]]: by context_id; an entry moved in the file is not a
    change); index paths."""
    old = {_name(x, i): (i, x) for i, x in enumerate(a)}
    new = {_name(x, i): (i, x) for i, x in enumerate(b)}
    out = []
    for name, (i, entry) in new.items():
        if name not in old:
            out.append(Change(f"{section}[{i}]", section))
        elif old[name][1] != entry:
            out += _diff_table(section, f"{section}[{i}]", old[name][1], entry)
    for name, (i, _entry) in old.items():
        if name not in new:
            out.append(Change(f"{section}[{i}]", section))
    return out


def _name(entry: Any, index: int) -> Any:
    return getattr(entry, "name", getattr(entry, "context_id", index))


def _unique(changes: Iterable[Change]) -> list[Change]:
    seen: dict[str, Change] = {}
    for c in changes:
        seen.setdefault(c.path, c)
    return list(seen.values())


def rule_for(change: Change) -> Apply:
    """The RULES entry for the change's key, else its table's, else RESTART."""
    section = change.rule.split(".", 1)[0]
    return RULES.get(change.rule, RULES.get(section, Apply.RESTART))


def restart_hint(instance: str = "") -> str:
    """The command that restarts this daemon (modemd@NAME for an instance)."""
    return f"systemctl restart modemd@{instance}" if instance else "systemctl restart modemd"


def plan(old: Any, new: Any, *, restart_hint: str = "systemctl restart modemd") -> Plan:
    """Group the changes from `old` to `new`; every RESTART key becomes one refused line."""
    result = Plan(changes=diff(old, new))
    for change in result.changes:
        how = rule_for(change)
        result.by.setdefault(how, []).append(change)
        if how is Apply.RESTART:
            result.refused.append(restart_line(change, restart_hint))
    return result


def restart_line(change: Change, restart_hint: str) -> str:
    section = change.rule.split(".", 1)[0]
    why = WHY_RESTART.get(change.rule) or WHY_RESTART.get(section)
    return (f"{change.path} cannot change while running{f' ({why})' if why else ''}: "
            f"restart modemd ({restart_hint})")


__all__ = [
    "RULES", "Apply", "Change", "Plan", "diff", "plan", "restart_hint", "restart_line", "rule_for",
]
