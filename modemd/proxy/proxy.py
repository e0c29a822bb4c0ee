"""Proxy: runs every configured local listener ([[forward]], [[listen]], [socks]) over one manager.

Each listener is a unit in its own cancel scope, keyed by name; `reload()` stops the units whose
configuration changed or disappeared and starts the new ones, so connections of unchanged forwards
are never touched.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ..capabilities import known_profile, listen_problems
from ..config import Config
from .endpoints import EndpointError
from .forward import StreamForward
from .listen import ModuleListen
from .socks5 import Socks5Server
from .stats import BufferGauge, FlowStats
from .udp_forward import UdpForward

log = logging.getLogger("modemd.proxy")


class ProxyConfigError(Exception):
    """A configured listener this module cannot serve; str() is one line."""


class _Unit:
    """One running listener: its config (to detect changes), its scope, and when it has ended."""

    def __init__(self, key: str, config: Any, service: Any) -> None:
        self.key = key
        self.config = config
        self.service = service
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Errors before started() reach the caller (bind failures); later ones are logged."""
        status = _Status(task_status)
        try:
            with self.scope:
                await self.service.run(task_status=status)
        except Exception:
            if not status.was_started:
                raise
            log.exception("%s stopped unexpectedly", self.key)
        finally:
            self.done.set()

    async def stop(self) -> None:
        self.scope.cancel()
        await self.done.wait()


class _Status:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.was_started = False

    def started(self, value: Any = None) -> None:
        self.was_started = True
        self.inner.started(value)


def check_capabilities(cfg: Config, profile: Any) -> None:
    """Refuse [[listen]] entries the module family cannot do (capabilities.py says which)."""
    profile = known_profile(cfg, profile)
    if profile is None:
        return
    problems = listen_problems(cfg, profile)
    if problems:
        raise ProxyConfigError("; ".join(problems))


class Proxy:
    def __init__(self, cfg: Config, manager: Any) -> None:
        self.cfg = cfg
        self.manager = manager
        self.gauge = BufferGauge()
        self.flows: dict[str, FlowStats] = {}
        self._units: dict[str, _Unit] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind every listener, report started, serve until cancelled."""
        check_capabilities(self.cfg, self.manager.link.profile)
        error: Exception | None = None
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for key, (config, service) in self._plan(self.cfg).items():
                    await self._start(key, config, service)
            except (EndpointError, OSError) as exc:
                error = exc  # raised plainly below, not inside an ExceptionGroup
                nursery.cancel_scope.cancel()
            else:
                task_status.started()
                await trio.sleep_forever()  # reload may stop every unit and start new ones
        if error is not None:
            raise error

    async def reload(self, new_cfg: Config) -> list[str]:
        """Apply a new configuration; returns the errors of units that could not start."""
        check_capabilities(new_cfg, self.manager.link.profile)
        plan = self._plan(new_cfg)
        for key, unit in list(self._units.items()):
            if key not in plan or plan[key][0] != unit.config:
                log.info("reload: stopping %s", key)
                await unit.stop()
                del self._units[key]
        errors = []
        for key, (config, service) in plan.items():
            if key in self._units:
                continue
            log.info("reload: starting %s", key)
            try:
                await self._start(key, config, service)
            except (EndpointError, OSError) as exc:
                errors.append(f"{key}: {exc}")
                log.error("reload: %s could not start: %s", key, exc)
        planned = {service.flow.name for _, service in plan.values()}
        for name in set(self.flows) - planned:
            del self.flows[name]  # its unit is gone: its counts are no longer published
        self.cfg = new_cfg
        return errors

    async def stop(self) -> None:
        """Stop every listener (shutdown): each unit closes its clients and their module sockets."""
        for key in list(self._units):
            await self._units.pop(key).stop()

    async def _start(self, key: str, config: Any, service: Any) -> None:
        assert self._nursery is not None
        unit = _Unit(key, config, service)
        await self._nursery.start(unit.run)
        self._units[key] = unit

    def _flow(self, name: str, kind: str) -> FlowStats:
        return self.flows.setdefault(name, FlowStats(name, kind))

    def _plan(self, cfg: Config) -> dict[str, tuple[Any, Any]]:
        """key -> (the config that defines the unit, a service object to run if it is new)."""
        linger = cfg.proxy.linger_seconds
        plan: dict[str, tuple[Any, Any]] = {}
        for fwd in cfg.forwards:
            flow = self._flow(fwd.name, "forward")
            service = (
                UdpForward(fwd, self.manager, flow) if fwd.listen.kind == "udp"
                else StreamForward(fwd, self.manager, flow, self.gauge, linger)
            )
            plan[f"forward {fwd.name}"] = (fwd, service)
        for lst in cfg.listens:
            flow = self._flow(lst.name, "listen")
            plan[f"listen {lst.name}"] = (
                lst, ModuleListen(lst, self.manager, flow, self.gauge, linger)
            )
        if cfg.socks is not None:
            flow = self._flow("socks", "socks")
            plan["socks"] = (cfg.socks, Socks5Server(
                cfg.socks, cfg.socks.context_id, self.manager, flow, self.gauge, linger
            ))
        return plan

    @property
    def units(self) -> list[str]:
        return sorted(self._units)

    @property
    def buffered_bytes(self) -> int:
        return self.gauge.current

    def connections(self) -> list[dict[str, Any]]:
        return self.manager.connections()
