"""Does this configuration fit this module family? One clear line when it does not.

Checked at start when `modem.model` names a family, and again as soon as the module has identified
itself (the supervisor calls `check` through its `check_profile` hook), so `model = "auto"` refuses a
configuration the module cannot serve just as clearly, instead of failing one socket at a time.
Section references are to docs/seeds-comparison.md.
"""

from __future__ import annotations

from typing import Any

from .profiles import Profile, UnsupportedConfig


def problems(cfg: Any, profile: Profile) -> list[str]:
    """Every configured item `profile` cannot do, each as a short phrase naming its key."""
    from .proxy.listen import unsupported_reason

    out: list[str] = []
    pdp = cfg.pdp
    name = profile.name
    if pdp.ip_type not in profile.ip_types:
        out.append(
            f'pdp.ip_type = "{pdp.ip_type}": {name} supports {", ".join(profile.ip_types)} only'
        )
    ids = profile.context_ids
    span = f"{ids.start}-{ids.stop - 1}"
    contexts = [("pdp.context_id", pdp.context_id)]
    contexts += [(f"forward {f.name!r} context_id", f.context_id) for f in cfg.forwards]
    contexts += [(f"listen {x.name!r} context_id", x.context_id) for x in cfg.listens]
    for key, context_id in contexts:
        if context_id not in ids:
            out.append(f"{key} = {context_id}: {name} has contexts {span} only")
    for x in cfg.listens:
        reason = unsupported_reason(x, profile)
        if reason is None and x.protocol == "tcp" and not profile.tcp_listener_ipv6 \
                and pdp.ip_type == "ipv6":
            reason = f'{name} has no TCP LISTENER on IPv6 (pdp.ip_type = "ipv6")'
        if reason is not None:
            out.append(f"listen {x.name!r}: {reason}")
    return out


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


__all__ = ["check", "problems"]
