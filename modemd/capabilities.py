"""Does this configuration fit this module family? One clear line when it does not.

The one place every capability check lives: `problems()` over the whole configuration (start with
`modem.model` naming a family, the supervisor's `check_profile` hook once the module has
identified itself with `model = "auto"`, a reload's `_cannot_serve`), and `listen_problem()` for
one [[listen]] (the proxy refuses it at start and reload, the listener before opening it).
Section references are to docs/seeds-comparison.md.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from .profiles import PROFILES, Profile, UnsupportedConfig


def known_profile(cfg: Any, link_profile: Any) -> Profile | None:
    """The family profile if known now: the module's, else the configured model (not "auto")."""
    if link_profile is not None:
        return link_profile
    model = getattr(getattr(cfg, "modem", None), "model", "auto")
    return PROFILES.get(model)  # "auto": checked when the module has named itself


def listen_problem(
    x: Any, profile: Profile, ip_type: str = "ipv4", key: str = "pdp.ip_type"
) -> str | None:
    """Why this family cannot serve the [[listen]] `x` on a context of `ip_type` (set by `key`),
    or None."""
    name = profile.name
    if x.protocol == "tcp" and not profile.tcp_listener:
        return f"{name} has no TCP LISTENER"
    if x.protocol == "udp" and not profile.udp_service:
        return f"{name} has no UDP SERVICE (the manual: \"not supported now\")"
    if x.protocol == "tcp" and not profile.tcp_listener_ipv6 and ip_type == "ipv6":
        return f'{name} has no TCP LISTENER on IPv6 ({key} = "ipv6")'
    return None


def listen_problems(cfg: Any, profile: Profile) -> list[str]:
    """Every [[listen]] `profile` cannot serve, one phrase each."""
    out = []
    index = {p.context_id: i for i, p in enumerate(cfg.pdp)}
    for x in cfg.listens:
        i = index.get(x.context_id)
        ip_type = "ipv4" if i is None else cfg.pdp[i].ip_type
        key = _pdp_key(cfg, i or 0, "ip_type")
        reason = listen_problem(x, profile, ip_type, key)
        if reason is not None:
            out.append(f"listen {x.name!r}: {reason}")
    return out


def _contexts(cfg: Any, profile: Profile) -> list[str]:
    name, ids = profile.name, profile.context_ids
    span = f"{ids.start}-{ids.stop - 1}"
    out = []
    keys = [(_pdp_key(cfg, i, "context_id"), p.context_id) for i, p in enumerate(cfg.pdp)]
    keys += [(f"forward {f.name!r} context_id", f.context_id) for f in cfg.forwards]
    keys += [(f"listen {x.name!r} context_id", x.context_id) for x in cfg.listens]
    if cfg.socks is not None:
        keys.append(("socks.context_id", cfg.socks.context_id))
    for key, context_id in keys:
        if context_id not in ids:
            out.append(f"{key} = {context_id}: {name} has contexts {span} only")
    if len(cfg.pdp) > profile.max_active_contexts:
        out.append(
            f"pdp: {len(cfg.pdp)} contexts configured, {name} keeps at most "
            f"{profile.max_active_contexts} active at a time"
        )
    return out


def _pdp_key(cfg: Any, i: int, key: str) -> str:
    return f"pdp.{key}" if len(cfg.pdp) == 1 else f"pdp[{i}].{key}"


def _ip_types(cfg: Any, profile: Profile) -> list[str]:
    return [
        f'{_pdp_key(cfg, i, "ip_type")} = "{p.ip_type}": {profile.name} supports '
        f'{", ".join(profile.ip_types)} only'
        for i, p in enumerate(cfg.pdp) if p.ip_type not in profile.ip_types
    ]


def _dns(cfg: Any, profile: Profile) -> list[str]:
    out = []
    with_dns = [(i, p) for i, p in enumerate(cfg.pdp) if p.dns]
    for i, p in with_dns:
        versions = {ipaddress.ip_address(x).version for x in p.dns}
        if profile.dnscfg_same_family and len(versions) > 1:
            out.append(f"{_pdp_key(cfg, i, 'dns')}: {profile.name} takes both DNS servers of "
                       "one IP version (both IPv4 or both IPv6)")
    if not profile.dnscfg_context and with_dns and len({p.dns for p in cfg.pdp}) > 1:
        out.append(f"pdp.dns: {profile.name} has one pair of DNS servers for every context; "
                   "give the same dns on each [[pdp]]")
    return out


def problems(cfg: Any, profile: Profile) -> list[str]:
    """Every configured item `profile` cannot do, each as a short phrase naming its key."""
    return [
        *_ip_types(cfg, profile), *_contexts(cfg, profile), *_dns(cfg, profile),
        *listen_problems(cfg, profile),
    ]


def check(cfg: Any, profile: Profile, what: str) -> None:
    """Raise UnsupportedConfig (one line) when `profile` cannot serve `cfg`.

    `what` says where the profile came from, e.g. 'modem.model = "bc25"' or 'the module
    identifies as "Quectel_BC25"'.
    """
    found = problems(cfg, profile)
    if found:
        raise UnsupportedConfig(
            f"{what} ({profile.title}), which cannot serve this configuration: "
            f"{'; '.join(found)}; change these settings or the module"
        )


__all__ = ["check", "known_profile", "listen_problem", "listen_problems", "problems"]
