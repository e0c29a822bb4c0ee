"""The daemon: wires config, supervisor, socket layer, proxy, metrics, control and systemd together.

Start-up order matters to systemd: READY=1 is sent once the config is loaded and every local listener is
bound (the module may still be booting; clients then wait in the bounded queue or are refused).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import tempfile
from pathlib import Path

import trio

from . import __version__, systemd
from .config import Config, ConfigError, load_config, parse_config
from .instance import config_file, state_dir
from .link import ModemLink
from .logs import register_secret, setup_logging
from .reload import Apply, Change, restart_hint
from .reload import plan as reload_plan
from .serial import SerialError

#: SIGHUP reloads the config; SIGTERM and SIGINT stop the daemon
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

log = logging.getLogger("modemd")

SHUTDOWN_SECONDS = 15.0


class UserError(Exception):
    """Something the user can fix; printed as one line by the CLI."""


def runtime_dir() -> Path:
    """Where --emulate puts its sockets: /run/modemd as root, else a private temp dir."""
    if os.geteuid() == 0:
        return Path("/run/modemd")
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"modemd-{os.getuid()}"


def emulate_defaults(run: Path) -> dict:
    """The built-in demo config: SOCKS5, metrics and the control socket on loopback."""
    return {
        "modem": {"model": "auto", "lock_dir": str(run), "health_interval": 10.0},
        "pdp": {"apn": "internet"},
        "socks": {"listen": "tcp:127.0.0.1:1080"},
        "metrics": {"listen": "127.0.0.1:9523"},
        "control": {"socket": str(run / "control.sock")},
    }


def config_path(args) -> str | None:
    """The file the config is read from (and re-read by reload); None: the built-in emulator one."""
    if args.emulate and not args.config:
        return None
    return str(args.config or config_file(_instance(args)))


def _instance(args) -> str:
    return getattr(args, "instance", None) or ""


def load(args) -> Config:
    try:
        path = config_path(args)
        if path is None:
            run = runtime_dir()
            run.mkdir(parents=True, exist_ok=True)
            return parse_config(emulate_defaults(run), emulate=True, source="built-in emulator config")
        return load_config(path, emulate=args.emulate, instance=_instance(args))
    except ConfigError as exc:
        if len(exc.errors) == 1:
            raise UserError(exc.errors[0]) from None
        raise UserError(f"invalid configuration ({len(exc.errors)} errors):\n{exc}") from None


def run_main(args) -> int:
    cfg = load(args)
    level = args.log_level or cfg.log.level
    setup_logging(level)
    register_secrets(cfg)
    try:
        trio.run(Daemon(cfg, args).run, strict_exception_groups=True)
    except BaseException as exc:  # noqa: BLE001 - unwrap trio's groups to find a user error
        leaf = _leaf(exc)
        if isinstance(leaf, _user_error_types()):
            raise UserError(_one_line(leaf)) from None
        raise
    return 0


def register_secrets(cfg: Config) -> None:
    """The config's secrets are redacted from every log line from now on (a changed password too).
    The SIM PIN is not one of them: logs.redact masks it where it can appear, as +CPIN= text."""
    for secret in (s for p in cfg.pdp for s in (p.password, p.username)):
        register_secret(secret)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the user must change something" (each says what, in one line)."""
    from .control import ControlError
    from .profiles import UnknownModel, UnsupportedConfig
    from .proxy.endpoints import EndpointError
    from .proxy.proxy import ProxyConfigError
    from .supervisor.power import PowerError

    return (
        SerialError, UserError, OSError, ControlError, UnknownModel, UnsupportedConfig,
        EndpointError, ProxyConfigError, PowerError,
    )


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups (3.10: the backport's)."""
    while hasattr(exc, "exceptions") and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, SerialError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


class Daemon:
    def __init__(self, cfg: Config, args) -> None:
        self.cfg = cfg          # the running config (--emulate: modem.port is the emulator's pty)
        self.loaded = cfg       # the config as read from its file: what a reload is compared with
        self.args = args
        self.link = ModemLink()
        self._reload_lock = trio.Lock()
        self._proxy_failed = False  # a listener did not start: the next reload tries it again
        self.started = 0.0
        self.emulated_hosts: dict[str, str] = {}  # --emulate: the emulator's whole DNS

    async def run(self) -> None:
        self.started = trio.current_time()
        self._check_model()
        # The receiver spans the daemon's whole life. trio re-raises the signals a receiver still
        # holds when it closes, and the default action of SIGTERM/SIGINT ends the process on the
        # spot: a second signal during the shutdown (systemd's stop and a `kill` at once, a
        # second Ctrl+C) would otherwise kill the daemon before its sockets and lock files are
        # removed. Held here, such a signal can only come back after all of that is done.
        with trio.open_signal_receiver(*SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                if self.args.emulate:
                    self.cfg = await self._start_emulator(nursery)
                await self._serve(nursery, signals)

    def _check_model(self) -> None:
        """A configuration the configured family cannot serve is refused before anything starts
        (with model = "auto", the supervisor does the same once the module has named itself)."""
        from .capabilities import check
        from .profiles import UnsupportedConfig, get_profile

        model = self.cfg.modem.model
        if model == "auto":
            return
        try:
            check(self.cfg, get_profile(model), f'modem.model = "{model}"')
        except UnsupportedConfig as exc:
            raise UserError(str(exc)) from None

    def _check_profile(self, profile, what: str) -> None:
        from .capabilities import check

        check(self.cfg, profile, what)

    async def _start_emulator(self, nursery: trio.Nursery) -> Config:
        from .emulator import Emulator, EmulatorConfig

        family = self.args.emulate_profile or (
            self.cfg.modem.model if self.cfg.modem.model != "auto" else "bg96"
        )
        emu_cfg = EmulatorConfig(family=family, baud=self.args.emulate_baud)
        self.emulator = await nursery.start(_run_emulator, Emulator, emu_cfg)
        self.emulated_hosts = dict(emu_cfg.hosts)
        modem = dataclasses.replace(self.cfg.modem, port=self.emulator.tty_path)
        print(f"emulator: {family} module on {self.emulator.tty_path}", flush=True)
        return dataclasses.replace(self.cfg, modem=modem)

    async def _serve(self, nursery: trio.Nursery, signals) -> None:
        from .metrics import Metrics
        from .proxy.proxy import Proxy
        from .sockets.manager import SocketManager
        from .supervisor.supervisor import Supervisor

        cfg = self.cfg
        self.metrics = metrics = Metrics()
        self.manager = manager = SocketManager(self.link, cfg.proxy, cfg.supervisor)
        manager.context_ids = set(cfg.context_ids)  # where stale sockets are looked for at start
        self.supervisor = supervisor = Supervisor(
            cfg, self.link,
            power=self._emulator_power(),
            reset_stale=manager.reset_stale,
            observer=metrics,
            connections=manager.connection_count,
            check_profile=self._check_profile,
            state_dir=state_dir(getattr(self.args, "instance", None) or ""),
            config_path=self.args.config or config_file(getattr(self.args, "instance", None) or ""),
        )
        self.proxy = proxy = Proxy(cfg, manager)
        metrics.add_provider(self._provide_metrics)
        metrics.declare_forwards([f.name for f in cfg.forwards] + [x.name for x in cfg.listens])
        for context_id in cfg.context_ids:
            metrics.declare_context(context_id)
        await nursery.start(manager.run)
        await nursery.start(proxy.run)
        await self._start_metrics(nursery)
        await self._start_control(nursery)
        nursery.start_soon(self._supervise, supervisor)
        systemd.ready(self.link.status_text)
        self._announce()
        nursery.start_soon(systemd.watchdog_task, supervisor.healthy)
        nursery.start_soon(self._status_loop)
        nursery.start_soon(self._signals, nursery, signals)

    async def _supervise(self, supervisor) -> None:
        """The supervisor; a module this config cannot use ends the daemon with one clear line."""
        from .profiles import UnknownModel, UnsupportedConfig
        from .proxy.proxy import ProxyConfigError

        try:
            await supervisor.run()
        except (UnknownModel, UnsupportedConfig, ProxyConfigError, SerialError) as exc:
            raise UserError(str(exc)) from None

    def _emulator_power(self):
        """--emulate without a power backend: switch the emulator itself off and on."""
        if not self.args.emulate or self.cfg.power.backend != "none":
            return None
        return EmulatorPower(self.emulator)

    async def _start_metrics(self, nursery: trio.Nursery) -> None:
        from .metrics_http import serve_metrics

        listen = self.cfg.metrics.listen
        if listen is None:
            return
        try:
            await nursery.start(serve_metrics, self.metrics, listen.host, listen.port)
        except OSError as exc:
            raise UserError(
                f"cannot listen for metrics on {listen.host}:{listen.port}: {exc.strerror}; "
                "change metrics.listen or stop the program using it"
            ) from None

    async def _start_control(self, nursery: trio.Nursery) -> None:
        from .control import ControlError, ControlServer
        from .control_handlers import handlers

        ctl = self.cfg.control
        if not ctl.socket:
            return
        server = ControlServer(ctl.socket, ctl.mode, ctl.gid, handlers(self))
        try:
            await nursery.start(server.run)
        except ControlError as exc:
            raise UserError(str(exc)) from None

    def _announce(self) -> None:
        """Print where the sockets are (the README's first command relies on it)."""
        cfg = self.cfg
        lines = [f"modemd {__version__}: listening"]
        for fwd in cfg.forwards:
            lines.append(f"  forward {fwd.name}: {fwd.listen} -> {fwd.remote} (via the module)")
        for lst in cfg.listens:
            lines.append(f"  listen {lst.name}: module port {lst.module_port} -> {lst.target}")
        if cfg.socks is not None:
            lines.append(f"  socks5: {cfg.socks.listen}")
        if cfg.metrics.listen is not None:
            lines.append(f"  metrics: http://{_hostport(cfg.metrics.listen)}/metrics")
        if cfg.control.socket:
            lines.append(f"  control: {cfg.control.socket} (modemctl --socket {cfg.control.socket} status)")
        if self.emulated_hosts:
            lines.append(_emulated_dns_note(self.emulated_hosts))
        print("\n".join(lines), flush=True)

    async def _status_loop(self) -> None:
        """systemd STATUS= follows the supervisor's human-readable status line."""
        last = None
        while True:
            text = self.link.status_text
            if text != last:
                systemd.status(text)
                last = text
            await trio.sleep(1.0)

    async def _signals(self, nursery: trio.Nursery, signals) -> None:
        """SIGHUP reloads; SIGTERM or SIGINT shuts down gracefully (`shutdown`), and another one
        during that shutdown ends the daemon at once, its sockets and lock files still removed."""
        async for signum in signals:
            if signum == signal.SIGHUP:
                await self.reload()
                continue
            log.info("%s: shutting down", signal.Signals(signum).name)
            systemd.stopping()
            nursery.start_soon(self._shut_down, nursery)
            break
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("SIGHUP: not reloading, shutting down")
                continue
            log.warning("%s during the shutdown: exiting now, without waiting for the module to "
                        "close its sockets", signal.Signals(signum).name)
            nursery.cancel_scope.cancel()
            return

    async def _shut_down(self, nursery: trio.Nursery) -> None:
        await self.shutdown()
        nursery.cancel_scope.cancel()

    async def shutdown(self) -> None:
        """Stop accepting, close every module socket with QICLOSE, within SHUTDOWN_SECONDS."""
        with trio.move_on_after(SHUTDOWN_SECONDS) as scope:
            await self.proxy.stop()
            for msock in list(self.manager.dispatcher.sockets.values()):
                await self.manager.close_socket(msock)
        if scope.cancelled_caught:
            log.warning("shutdown took longer than %g s; exiting anyway", SHUTDOWN_SECONDS)

    async def reload(self) -> list[str]:
        """SIGHUP and modemctl reload: apply what changed in the config file, or nothing at all.

        Each changed key is looked up in `modemd.reload.RULES`: listeners go to Proxy.reload
        (unchanged ones keep their connections), [pdp] settings to the supervisor (the context is
        re-cycled with them), log.level is set at once. A key that needs a restart, or that the
        module cannot serve, fails the reload with one line naming it, and nothing of the new file
        is applied. Returns those lines ([] = applied); each is logged too.
        """
        async with self._reload_lock:
            systemd.reloading("reloading configuration")
            try:
                errors = await self._reload()
            finally:
                systemd.ready(self.link.status_text)
        for line in errors:
            log.error("reload failed: %s", line)
        return errors

    async def _reload(self) -> list[str]:
        path = config_path(self.args)
        if path is None:
            return ["no configuration file to reload (running on the built-in config)"]
        try:
            new = load_config(path, emulate=self.args.emulate, instance=_instance(self.args))
        except ConfigError as exc:
            return [f"{line} (nothing applied)" for line in exc.errors]
        register_secrets(new)  # before any line about it: a changed password is never logged
        changes = reload_plan(self.loaded, new, restart_hint=restart_hint(_instance(self.args)))
        refused = changes.refused + self._cannot_serve(new)
        if refused:
            return [f"{line} (nothing applied)" for line in refused]
        todo = dict(changes.by)
        if self._proxy_failed:
            todo.setdefault(Apply.PROXY, [])
        if not todo:
            log.info("reload: %s unchanged", path)
            return []
        log.info("reload: applying %s", ", ".join(c.path for c in changes.changes) or "listeners")
        running = dataclasses.replace(new, modem=self.cfg.modem)  # --emulate: keep the pty
        appliers = {Apply.PROXY: self._reload_proxy, Apply.PDP: self._reload_pdp,
                    Apply.LIVE: self._reload_live, Apply.SIM: self._reload_sim}  # one per Apply kind
        errors: list[str] = []
        for how, applier in appliers.items():
            if how in todo:
                errors += await applier(running, todo[how])
        self.cfg, self.loaded = running, new
        return errors

    def _cannot_serve(self, new: Config) -> list[str]:
        """What the module (as identified, else as configured) cannot do in the new config."""
        from .capabilities import known_profile, problems

        profile = known_profile(new, self.link.profile)
        if profile is None:
            return []
        out = [f"{p}; change it back" for p in problems(new, profile)]
        if new.listens and not self.loaded.listens and profile.server_init_commands:
            out.append(f"listen: the first [[listen]] needs {profile.name}'s server settings, "
                       f"sent only at start: restart modemd "
                       f"({restart_hint(_instance(self.args))})")
        return out

    async def _reload_proxy(self, new: Config, changes: list[Change]) -> list[str]:
        from .proxy.proxy import ProxyConfigError

        try:
            errors = await self.proxy.reload(new)
        except ProxyConfigError as exc:
            return [str(exc)]
        self._proxy_failed = bool(errors)
        self.metrics.declare_forwards([f.name for f in new.forwards] + [x.name for x in new.listens])
        return errors

    async def _reload_pdp(self, new: Config, changes: list[Change]) -> list[str]:
        """The supervisor re-cycles the context with them (its connections are reset, logged)."""
        self.supervisor.apply_pdp(new.pdp)
        return []

    async def _reload_sim(self, new: Config, changes: list[Change]) -> list[str]:
        """A new PIN: the supervisor leaves a SIM stop state and tries it (once)."""
        self.supervisor.apply_sim(new.sim)
        return []

    async def _reload_live(self, new: Config, changes: list[Change]) -> list[str]:
        for change in changes:
            if change.rule == "log.level":
                if getattr(self.args, "log_level", None):
                    log.info("reload: log.level = %s not used: --log-level %s on the command line "
                             "wins", new.log.level, self.args.log_level)
                else:
                    logging.getLogger().setLevel(new.log.level.upper())
        return []

    def _provide_metrics(self, m) -> None:
        from .metrics_provider import provide

        provide(self, m)


def _emulated_dns_note(hosts: dict[str, str]) -> str:
    """The emulator has no Internet: say which names it resolves, so a README line that fetches
    example.com is not mistaken for a fault when it answers 565 dns_failed."""
    names = ", ".join(f"{name} -> {ip}" for name, ip in sorted(hosts.items()))
    return (
        f"  emulator: no Internet; the module resolves only {names} and connects to local "
        "servers on loopback (other names, such as example.com, answer 565 dns_failed)"
    )


class EmulatorPower:
    """A power backend that switches the in-process emulator (used by --emulate)."""

    name = "emulator"
    has_supply = True
    has_pwrkey = True
    pwrkey_seconds = 2.0
    supply_off_seconds = 12.0

    def __init__(self, emulator) -> None:
        self.emulator = emulator

    async def supply_off(self) -> None:
        await self.emulator.power_off()

    async def supply_on(self) -> None:
        await self.emulator.power_on()

    async def pwrkey_pulse(self, seconds: float | None = None) -> None:
        await trio.sleep(self.pwrkey_seconds if seconds is None else seconds)
        await self.emulator.pwrkey()

    async def aclose(self) -> None:
        return None


def _hostport(ep) -> str:
    return f"[{ep.host}]:{ep.port}" if ":" in (ep.host or "") else f"{ep.host}:{ep.port}"


async def _run_emulator(emulator_cls, emu_cfg, *, task_status=trio.TASK_STATUS_IGNORED):
    async with emulator_cls.open(emu_cfg) as emu:
        task_status.started(emu)
        await trio.sleep_forever()


__all__ = ["Daemon", "EmulatorPower", "UserError", "run_main"]
