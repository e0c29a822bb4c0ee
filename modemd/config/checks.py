"""Rules across sections, in one place: unique names, colliding listeners, module ports taken
twice, context references.  Array entries come with their key paths as in the file (invalid
entries included as None), so every line names the entry the user wrote."""

from __future__ import annotations

from .endpoints import Endpoint, overlaps
from .schema import Context, Entry
from .sections import Config


def cross_checks(cfg: Config, ctx: Context) -> None:
    """Append every cross-section problem to ``ctx.errors``."""
    entries = [*ctx.entries.get("forward", []), *ctx.entries.get("listen", [])]
    _unique_names(ctx.errors, entries)
    _listeners_apart(ctx.errors, cfg, ctx.entries.get("forward", []))
    _module_ports_apart(ctx.errors, ctx.entries.get("listen", []))
    _contexts_unique(ctx.errors, ctx.entries.get("pdp", []))
    socks = [] if cfg.socks is None else [
        Entry("socks", cfg.socks, {"context_id": cfg.socks.context_id})
    ]
    _contexts_configured(ctx.errors, cfg, [*entries, *socks])


def _unique_names(errors: list[str], entries: list[Entry]) -> None:
    names: dict[str, str] = {}
    for path, item, _ in entries:
        if item is None:
            continue
        key = f"{path}.name"
        if item.name in names:
            errors.append(f"{key}: {item.name!r} is already used by {names[item.name]}")
        else:
            names[item.name] = key


def _listeners_apart(errors: list[str], cfg: Config, forwards: list[Entry]) -> None:
    local: list[tuple[str, Endpoint]] = [
        (f"{path}.listen", fwd.listen) for path, fwd, _ in forwards if fwd is not None
    ]
    if cfg.socks is not None:
        local.append(("socks.listen", cfg.socks.listen))
    if cfg.metrics.listen is not None:
        local.append(("metrics.listen", cfg.metrics.listen))
    if cfg.control.socket:
        local.append(("control.socket", Endpoint("unix", path=cfg.control.socket)))
    for j, (key, ep) in enumerate(local):
        for other_key, other in local[:j]:
            if overlaps(ep, other):
                how = "is already used by" if ep == other else "overlaps"
                errors.append(f"{key}: {str(ep)!r} {how} {other_key} ({other})")
                break


def _module_ports_apart(errors: list[str], listens: list[Entry]) -> None:
    ports: dict[tuple[str, int], str] = {}
    for path, lst, _ in listens:
        if lst is None:
            continue
        slot = (lst.protocol, lst.module_port)
        key = f"{path}.module_port"
        if slot in ports:
            errors.append(
                f"{key}: {lst.protocol} port {lst.module_port} is already used by {ports[slot]}"
            )
        else:
            ports[slot] = key


def _contexts_unique(errors: list[str], pdps: list[Entry]) -> None:
    """One [[pdp]] entry per context; at least one entry."""
    if not pdps:
        errors.append("pdp: no context configured; give at least one [[pdp]] entry")
    seen: dict[int, str] = {}
    for path, pdp, fields in pdps:
        context_id = pdp.context_id if pdp is not None else fields.get("context_id")
        if context_id is None:
            continue
        if context_id in seen:
            errors.append(
                f"{path}.context_id: context {context_id} is already configured by {seen[context_id]}"
            )
        else:
            seen[context_id] = path


def _contexts_configured(errors: list[str], cfg: Config, entries: list[Entry]) -> None:
    """Every context_id an entry names must be one [pdp] / [[pdp]] activates."""
    ids = cfg.context_ids
    default = ids[0] if ids else 1
    for path, _, fields in entries:
        context_id = fields.get("context_id", default)
        if ids and context_id not in ids:
            configured = ", ".join(str(i) for i in ids)
            errors.append(
                f"{path}.context_id: context {context_id} is never activated: [pdp] "
                f"configures context{'s' if len(ids) > 1 else ''} {configured}"
            )
