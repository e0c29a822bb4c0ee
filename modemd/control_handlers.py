"""The control socket's commands (modemctl), implemented on the running daemon.

Every AT exchange goes through the AT channel's queue like any other command; nothing here touches the
port directly. Result shapes are the ones `modemctl` documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

from . import __version__
from .at.channel import AtError
from .at.clock import ntp_time
from .at.commands import UrcTimeout, operator_refusal
from .at.protocol import Command
from .at.radio import REGISTRATION_DOMAINS, Quality
from .control import ControlError
from .link import RadioStats
from .logs import redact
from .validate import check_hostname

STATUS_QUERY_SECONDS = 3.0
NTP_SERVER = "pool.ntp.org"  # `modemctl ntp` without a server
NTP_PORT = 123


def handlers(daemon) -> dict[str, Any]:
    """name -> async (args, peer) -> result, bound to `daemon`."""

    async def status(args, peer):
        return await status_of(daemon)

    async def connections(args, peer):
        rows = daemon.manager.connections()
        for row in rows:
            row["age_seconds"] = row.pop("age", None)
        return rows

    async def ping(args, peer):
        at = _at(daemon)
        host = _host(args)
        context_id = _context_id(daemon.cfg, args)
        count = int(args.get("count", 4))
        with _module_errors(host):
            replies, summary = await at.qping(context_id, host, count=max(1, min(count, 10)))
        return {
            "host": host,
            "context_id": context_id,
            "replies": [
                {"address": r.address, "bytes": r.size, "time_ms": r.time_ms, "ttl": r.ttl}
                for r in replies
            ],
            "summary": None if summary is None else {
                "sent": summary.sent, "received": summary.received, "lost": summary.lost,
                "min_ms": summary.min_ms, "max_ms": summary.max_ms, "avg_ms": summary.avg_ms,
            },
        }

    async def resolve(args, peer):
        at = _at(daemon)
        host = _host(args)
        context_id = _context_id(daemon.cfg, args)
        with _module_errors(host):
            addresses = await at.qidnsgip(context_id, host)
        return {"host": host, "context_id": context_id, "addresses": addresses}

    async def ntp(args, peer):
        at = _at(daemon)
        server = _host(args, NTP_SERVER)
        port = args.get("port", NTP_PORT)
        if type(port) is not int or not 1 <= port <= 65535:
            raise ControlError(f"port {port}: give a port number from 1 to 65535")
        context_id = _context_id(daemon.cfg, args)
        with _module_errors(server):
            answer = await at.qntp(context_id, server, port)
        if answer.result != 0:
            raise ControlError(f"{server}: NTP failed: {answer.result} "
                               f"{at.profile.error_name(answer.result)}")
        try:
            stamp = ntp_time(answer.time)
        except ValueError as exc:
            raise ControlError(f"{server}: the module answered {exc}") from None
        return {"server": server, "port": port, "context_id": context_id, "utc": stamp.iso,
                "unix": int(stamp.utc.timestamp()), "zone_minutes": stamp.zone_minutes,
                "module_time": answer.time}

    async def reconnect(args, peer):
        daemon.supervisor.reconnect("modemctl reconnect")  # QIDEACT -> QICSGP -> QIACT
        return {"requested": "pdp cycle"}

    async def reboot(args, peer):
        force = bool(args.get("force"))
        daemon.supervisor.fire_reboot("modemctl reboot", force=force)
        due = daemon.supervisor.next_reboot_unix
        return {"requested": "reboot", "force": force, "next_reboot": due or None}

    async def reload(args, peer):
        errors = await daemon.reload()  # the same path as SIGHUP
        if len(errors) == 1:
            raise ControlError(errors[0])
        if errors:
            raise ControlError(f"reload failed ({len(errors)} problems):\n" + "\n".join(errors))
        result = {"reloaded": True, "units": daemon.proxy.units}
        pending = [key for k in daemon.supervisor.contexts for key in k.pending]
        if pending:  # applied: the context is re-cycled with them next (status shows when)
            result["pending"] = list(pending)
        return result

    async def at_command(args, peer):
        at = _at(daemon)
        text = str(args.get("command", "")).strip()
        if not text.upper().startswith("AT") or any(ord(c) < 0x20 or ord(c) > 0x7E for c in text):
            raise ControlError("give one AT command line, e.g. modemctl at 'AT+CSQ'")
        refused = operator_refusal(text)  # it would take the line or sockets from modemd
        if refused:
            raise ControlError(refused)
        name = text.split("=")[0].split("?")[0]
        # its own +NAME: lines belong to it, also where they double as URCs (+CPIN: SIM PIN)
        prefix = name[2:].upper() + ":" if name.upper().startswith("AT+") else None
        try:
            resp = await at.channel.command(
                Command(text, prefix=prefix, bare_lines=True, timeout=at.profile.timeout(name)),
                check=False,
            )
        except AtError as exc:
            raise ControlError(str(exc)) from None
        # a query such as AT+QICSGP=1 echoes the APN credentials: they never leave the daemon
        return {"lines": [redact(line) for line in resp.lines], "final": redact(resp.final)}

    return {
        "status": status, "connections": connections, "ping": ping, "resolve": resolve,
        "ntp": ntp, "reconnect": reconnect, "reboot": reboot, "reload": reload, "at": at_command,
    }


def _at(daemon):
    at = daemon.link.at
    if at is None:
        raise ControlError(f"the module is not ready ({daemon.link.status_text})")
    return at


def _context_id(cfg, args) -> int:
    """The context a ping or lookup goes through: `context_id` when given (one the config
    activates), else the first configured, the one forwards and SOCKS5 use by default."""
    context_id = args.get("context_id")
    if context_id is None:
        return cfg.pdp[0].context_id
    configured = ", ".join(str(c) for c in cfg.context_ids)
    if type(context_id) is not int or context_id not in cfg.context_ids:
        raise ControlError(f"context {context_id} is not configured: modemd activates context(s) "
                           f"{configured} ([[pdp]] context_id)")
    return context_id


def _host(args, default: str = "") -> str:
    try:
        return check_hostname(str(args.get("host") or default))
    except ValueError as exc:
        raise ControlError(str(exc)) from None


@contextmanager
def _module_errors(what: str) -> Iterator[None]:
    """What the module refused, did not answer, or cannot do is the user's one line (naming
    `what`), not an internal error with a traceback in the journal."""
    try:
        yield
    except NotImplementedError as exc:  # the family has no such command
        raise ControlError(str(exc)) from None
    except (AtError, LookupError, UrcTimeout) as exc:
        raise ControlError(f"{what}: {exc}") from None


def pdp_status(link, keeper) -> dict[str, Any]:
    """One context's settings in effect (what it was activated with), never the credentials;
    keys a reload changed that the context does not use yet are listed as pending."""
    eff = keeper.effective
    ctx = link.context(eff.context_id)
    out: dict[str, Any] = {
        "context_id": eff.context_id, "up": ctx.up, "address": ", ".join(ctx.addresses) or None,
        "addresses": list(ctx.addresses), "apn": eff.apn, "auth": eff.auth,
        "ip_type": eff.ip_type, "activations": keeper.activations,
    }
    pending = keeper.pending
    if pending:
        out["pending"] = list(pending)
    return out


async def status_of(daemon) -> dict[str, Any]:
    link, sup = daemon.link, daemon.supervisor
    pool = daemon.manager.pool
    result: dict[str, Any] = {
        "state": link.state,
        "status": link.status_text,
        **link.identity,
        "pdp": pdp_status(link, sup.pdp),  # the first (default) context, as before
        "contexts": [pdp_status(link, keeper) for keeper in sup.contexts],
        "uptime_seconds": round(trio.current_time() - daemon.started, 1),
        "connections": {
            "active": len(daemon.manager.connections()),
            "queued": pool.queued if pool else 0,
            "connect_ids_in_use": pool.in_use if pool else 0,
            "connect_ids_available": pool.available if pool else 0,
        },
        "sim": {
            "state": sup.sim.state, "pin_attempts_left": sup.sim.pin_attempts_left,
            "puk_attempts_left": sup.sim.puk_attempts_left,
        },
        "reboots": sup.reboot_count,
        "next_reboot": sup.next_reboot_unix or None,
        "version": __version__,
    }
    if link.radio.sampled_at is None and link.at is not None and link.state == "serving":
        with trio.move_on_after(STATUS_QUERY_SECONDS):  # no sample yet: ask once, live
            await sup.radio.poll(link.at)
    result.update(radio_status(link.radio))
    return result


def radio_status(radio: RadioStats) -> dict[str, Any]:
    """Signal, operator and registration from the radio task's publication (link.radio)."""
    out: dict[str, Any] = {}
    if radio.sampled_at is None:
        return out
    quality = radio.quality or Quality()
    signal = {"csq": radio.csq, "rssi_dbm": radio.rssi_dbm or quality.rssi_dbm,
              "rsrp_dbm": quality.rsrp_dbm, "rsrq_db": quality.rsrq_db, "sinr_db": quality.sinr_db}
    out["signal"] = {k: v for k, v in signal.items() if v is not None}
    op = radio.operator
    if op is not None:
        out["operator"] = op.name or op.numeric or None
        out["technology"] = op.technology or quality.sysmode or None
    out["registration"] = {
        REGISTRATION_DOMAINS.get(kind, kind.lower()): reg.stat
        for kind, reg in radio.registration.items()
    }
    out["registration_losses"] = radio.losses
    return out
