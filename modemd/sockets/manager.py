"""SocketManager: the socket layer's entry point for the proxy and the supervisor.

It opens module sockets (clients, listeners), accepts the module's incoming connections, closes IDs
(an ID is reused only after AT+QICLOSE answered) and cleans stale IDs at start-up and after every module
reset. It follows the supervisor's current AT session through `link.at`: a new session gets a new URC
subscription and the stale-ID sweep before the next open.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio

from ..at.channel import AtCommandError, AtError, AtTimeout, ChannelClosed, CommandLost
from ..at.commands import QuectelAt, ip_version, is_ip_literal
from ..at.urc import Incoming, IncomingFull
from ..validate import check_hostname
from .dispatcher import SUBSCRIBE_BUFFER, UrcDispatcher
from .errors import (
    CHANNEL_CLOSED,
    COMMAND_ERROR,
    COMMAND_LOST,
    COMMAND_TIMEOUT,
    CONTEXT_LOST,
    CONTEXT_OPEN_FAILURES,
    INVALID_HOST,
    NOT_SERVING,
    OPEN_TIMEOUT,
    REMOTE_OPEN_FAILURES,
    ConnectionLost,
    OpenError,
    SocketError,
)
from .pool import QUARANTINED, ConnectIdPool
from .scheduler import TurnScheduler
from .signal import wait_any
from .socket import ModuleSocket, SocketEnv, SocketSettings
from .state import SocketState
from .stats import SocketStats

log = logging.getLogger("modemd.sockets")

CLOSE_GRACE = 15.0  # s: longest a shielded QICLOSE may hold up a cancelled caller
QICLOSE_TRIES = 3   # a QICLOSE whose answer was lost is written again (closing twice is harmless)


def settings_from(proxy_cfg: Any, supervisor_cfg: Any) -> SocketSettings:
    """SocketSettings from [proxy] and [supervisor] (either may be None or lack a key)."""
    defaults = SocketSettings()
    return SocketSettings(
        unacked_window=getattr(proxy_cfg, "unacked_window", defaults.unacked_window),
        ack_poll_interval=getattr(supervisor_cfg, "ack_poll_interval", defaults.ack_poll_interval),
        ack_poll_count=getattr(supervisor_cfg, "ack_poll_count", defaults.ack_poll_count),
        reconcile_interval=getattr(
            supervisor_cfg, "reconcile_interval", defaults.reconcile_interval
        ),
        direct_push=getattr(proxy_cfg, "direct_push", defaults.direct_push),
    )


class SocketManager:
    def __init__(self, link: Any, proxy_cfg: Any = None, supervisor_cfg: Any = None, *,
                 scheduler_depth: int = 2) -> None:
        self.link = link
        self.queue_timeout = float(getattr(proxy_cfg, "queue_timeout", 30.0))
        self.queue_limit = int(getattr(proxy_cfg, "queue_limit", 64))
        self.settings = settings_from(proxy_cfg, supervisor_cfg)
        self.stats = SocketStats()
        self.scheduler = TurnScheduler(scheduler_depth)
        # the supervisor's radio polls share the ACK polls' background lane (link.py)
        link.set_background_lane(lambda key: self.scheduler.turn(key, background=True))
        self.dispatcher = UrcDispatcher(self._on_incoming, self._on_incoming_full)
        self.pool: ConnectIdPool | None = None
        self.context_ids: set[int] = {1}
        self._env: SocketEnv | None = None
        self._dispatch_scope: trio.CancelScope | None = None
        self._dispatch_at: QuectelAt | None = None
        self._nursery: trio.Nursery | None = None
        self._cleaned: tuple[object, int] | None = None
        self._stale_lock = trio.Lock()
        # unbounded in type, bounded in practice: at most one entry per connect_id
        self._janitor_in, self._janitor_out = trio.open_memory_channel(math.inf)

    # -- tasks --------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._janitor)
            nursery.start_soon(self._sweeper)
            task_status.started()

    async def _janitor(self) -> None:
        """Close incoming connections nobody took (URC handlers cannot send AT themselves)."""
        async for msock in self._janitor_out:
            await self.close_socket(msock)

    async def _sweeper(self) -> None:
        """Retry QICLOSE of quarantined IDs now and then, so a slow QICLOSE does not leak IDs."""
        while True:
            await trio.sleep(self.settings.reconcile_interval)
            serving = any(self.link.serving(ctx) for ctx in self.context_ids)
            if serving and self.pool is not None and self.pool.ids_in(QUARANTINED):
                await self._clean(self.link.at, self.pool.ids_in(QUARANTINED))

    # -- session ------------------------------------------------------------------------------
    def _session(self, context_id: int) -> SocketEnv:
        at = self.link.at
        if at is None or not self.link.serving(context_id):
            raise OpenError(NOT_SERVING, f"context {context_id} is not active")
        return self._follow(at)

    def _follow(self, at: QuectelAt) -> SocketEnv:
        """Use the supervisor's current session: its profile, and a URC subscription on it."""
        if self._env is None or self._env.at is not at:
            profile = at.profile
            if self.pool is None or self.pool.connect_ids != profile.connect_ids:
                self.pool = ConnectIdPool(profile.connect_ids, self.queue_limit)
            self._env = SocketEnv(
                at, profile, self.scheduler, self.stats, self.settings, self.close_socket,
            )
        if self._dispatch_at is not at and self._nursery is not None:
            self._subscribe(at)
        return self._env

    def _subscribe(self, at: QuectelAt) -> None:
        """Subscribe now (before any QIOPEN is written, so no URC is missed); drop the old one."""
        assert self._nursery is not None
        if self._dispatch_scope is not None:
            self._dispatch_scope.cancel()
        urcs = at.subscribe_sockets(
            SUBSCRIBE_BUFFER, self.dispatcher.route_push, self.dispatcher.push_corrupt,
            self.dispatcher.push_done,
        )
        self._dispatch_at = at
        self._dispatch_scope = scope = trio.CancelScope()
        self._nursery.start_soon(self._dispatch, urcs, scope)

    async def _dispatch(self, urcs: Any, scope: trio.CancelScope) -> None:
        with scope:
            await self.dispatcher.run(urcs)

    async def _prepare(self, context_id: int) -> SocketEnv:
        env = self._session(context_id)
        self.context_ids.add(context_id)
        if self._cleaned != (env.at, self.link.module_generation):
            await self.reset_stale(env.at)
        return env

    # -- stale IDs ----------------------------------------------------------------------------
    async def reset_stale(self, at: QuectelAt | None = None) -> int:
        """QICLOSE every ID the module lists that no socket of ours owns (start-up, reset)."""
        at = at or self.link.at
        if at is None:
            return 0
        self._follow(at)
        generation = self.link.module_generation
        async with self._stale_lock:
            try:
                states = await at.qistate(tuple(sorted(self.context_ids)))
            except AtError as exc:
                log.warning("AT+QISTATE failed, stale connect_ids stay: %s", exc)
                return 0
            ids = {s.connect_id for s in states if not self._our_incoming(s)}
            assert self.pool is not None
            closed = await self._clean(at, sorted(ids | set(self.pool.ids_in(QUARANTINED))))
            self._cleaned = (at, generation)
        if closed:
            log.info("closed %d stale connect_id(s) left on the module", closed)
        return closed

    def _our_incoming(self, state: Any) -> bool:
        """An incoming connection of one of our listeners whose URC is still on its way."""
        if state.service_type != "TCP INCOMING" or state.server_id is None:
            return False
        server = self.dispatcher.sockets.get(state.server_id)
        return server is not None and server.service_type == "TCP LISTENER"

    async def _clean(self, at: QuectelAt, ids: list[int]) -> int:
        assert self.pool is not None
        closed = 0
        for connect_id in ids:
            if not self.pool.begin_cleaning(connect_id):
                continue  # owned by a live socket
            ok = await self._qiclose(at, connect_id)
            self.pool.end_cleaning(connect_id, ok)
            closed += ok
        self.stats.stale_closed += closed
        return closed

    async def _qiclose(self, at: QuectelAt, connect_id: int) -> bool:
        """True once the module answered (OK, or ERROR: nothing open there): only then is the
        ID known to be closed. An answer lost on the line (CommandLost): close it again. A
        silent module (AtTimeout) was reported by the channel itself: the ID stays quarantined."""
        for _ in range(QICLOSE_TRIES):
            try:
                await at.qiclose(connect_id)
                return True
            except AtCommandError:
                return True
            except CommandLost as exc:
                self.stats.commands_lost += 1
                log.info("AT+QICLOSE=%d: %s; closing it again", connect_id, exc)
                continue
            except AtTimeout:
                break
            except ChannelClosed:
                return False
        self.stats.qiclose_failures += 1
        return False

    # -- open ---------------------------------------------------------------------------------
    async def open_client(
        self, context_id: int, service_type: str, host: str, port: int, *, label: str = "",
        local_peer: str = "",
    ) -> ModuleSocket:
        """Open a "TCP" or "UDP" client socket; raise OpenError with the module's reason."""
        if service_type not in ("TCP", "UDP"):
            raise ValueError(f"client service_type must be TCP or UDP, not {service_type!r}")
        try:
            host = check_hostname(host)
        except ValueError as exc:
            self.stats.open_failed[INVALID_HOST] += 1
            raise OpenError(INVALID_HOST, str(exc)) from None
        return await self._open(context_id, service_type, host, port, 0, label, local_peer)

    async def open_server(
        self, context_id: int, service_type: str, local_port: int, *, label: str = ""
    ) -> ModuleSocket:
        """Open a module-side "TCP LISTENER" or "UDP SERVICE" on `local_port`, at the family's
        local address for the context's IP version (profile data, QuectelAt.listen_address)."""
        if service_type not in ("TCP LISTENER", "UDP SERVICE"):
            raise ValueError("server service_type must be TCP LISTENER or UDP SERVICE")
        return await self._open(context_id, service_type, None, 0, local_port, label, "")

    def ipv6_only(self, context_id: int) -> bool:
        """The context has IPv6 addresses only (as the supervisor published them with
        context_up): listeners take the IPv6 loopback, BC25 names resolve as IPv6."""
        addresses = self.link.context(context_id).addresses
        return bool(addresses) and all(ip_version(a) == 6 for a in addresses)

    async def _open(
        self, context_id: int, service_type: str, host: str | None, port: int, local_port: int,
        label: str, local_peer: str,
    ) -> ModuleSocket:
        try:
            return await self._open_any(
                context_id, service_type, host, port, local_port, label, local_peer
            )
        except OpenError as exc:
            self.stats.open_failed[exc.reason] += 1
            raise

    async def _open_any(
        self, context_id: int, service_type: str, host: str | None, port: int, local_port: int,
        label: str, local_peer: str,
    ) -> ModuleSocket:
        """Try IDs until one opens or the module gives a real answer (563 means: another ID).
        `host` None: a server socket, at the family's local address for the context."""
        env = await self._prepare(context_id)
        if host is None:
            host = env.at.listen_address(self.ipv6_only(context_id))
        held: list[ModuleSocket] = []  # IDs that answered 563: closed, kept out of this open
        try:
            for _ in env.profile.connect_ids:
                msock = await self._reserve(env, context_id, service_type, host, port, local_port)
                msock.label, msock.local_peer = label, local_peer
                result = await self._open_on(env, msock)
                if result == 0:  # on_open_result moved it to OPEN already
                    self._govern(msock)
                    self.stats.opened += 1
                    self.link.report_open(context_id, True)
                    log.info("connect_id %d opened: %s %s", msock.connect_id, service_type,
                             _where(msock), extra=log_fields(msock))
                    return msock
                if env.profile.error_name(result) != "socket_id_used":
                    raise await self._open_failed(msock, OpenError(
                        env.profile.error_name(result),
                        f"{result} {env.profile.error_name(result)}", result,
                    ))
                self.stats.id_collisions += 1
                log.warning("connect_id %d is in use on the module (563): closing it, trying "
                            "another", msock.connect_id)
                await self._collided(msock, held)
            raise OpenError("socket_id_used", "every connect_id answered socket_id_used")
        finally:
            for msock in held:
                self.pool.release(msock.connect_id, msock)  # type: ignore[union-attr]

    async def _reserve(
        self, env: SocketEnv, context_id: int, service_type: str, host: str, port: int,
        local_port: int,
    ) -> ModuleSocket:
        """A socket object owning a free connect_id (waiting in the bounded queue if needed)."""
        msock = ModuleSocket(
            env, context_id, service_type, host, port, local_port=local_port,
            lost=self.link.lost(context_id),
        )
        msock.generation = self.link.module_generation
        assert self.pool is not None
        try:
            msock.connect_id = await self.pool.acquire(msock, self.queue_timeout)
        except SocketError as exc:
            raise OpenError(exc.reason, exc.detail) from None
        if self._env is not env or not self.link.serving(context_id):
            self.pool.release(msock.connect_id, msock)
            raise OpenError(NOT_SERVING, f"context {context_id} went down while queued")
        self.dispatcher.register(msock)
        return msock

    async def _open_on(self, env: SocketEnv, msock: ModuleSocket) -> int:
        """QIOPEN on the socket's ID: the +QIOPEN result code; raises OpenError otherwise."""
        try:
            return await self._qiopen(env, msock)
        except OpenError as exc:
            raise await self._open_failed(msock, exc) from None
        except BaseException:
            await self._discard(msock)
            raise

    def _push_capable(self, env: SocketEnv, service_type: str) -> bool:
        """Direct push for TCP streams, where enabled and a governor can run (see socket.py)."""
        return (
            service_type in ("TCP", "TCP INCOMING") and env.settings.direct_push
            and env.profile.direct_push and self._nursery is not None
        )

    def _govern(self, msock: ModuleSocket) -> None:
        """Start the push governor of a socket that may push (it ends with close_socket)."""
        if msock.push_capable and self._nursery is not None:
            self._nursery.start_soon(self._run_governor, msock, msock.governor_scope)

    @staticmethod
    async def _run_governor(msock: ModuleSocket, scope: trio.CancelScope) -> None:
        with scope:
            await msock.push_governor()

    async def _qiopen(self, env: SocketEnv, msock: ModuleSocket) -> int:
        push = self._push_capable(env, msock.service_type)
        if push:  # the framing must know before the first push can arrive
            env.at.set_push(msock.connect_id, True)
            msock.push_capable = msock.pushing = True
        try:
            await env.at.qiopen(
                msock.context_id, msock.connect_id, msock.service_type, msock.host, msock.port,
                msock.local_port, 1 if push else 0, ipv6_context=self.ipv6_only(msock.context_id),
            )
        except AtCommandError as exc:
            if exc.code is not None:
                return exc.code
            raise OpenError(COMMAND_ERROR, f"AT+QIOPEN: {exc.response.final}") from None
        except CommandLost as exc:  # maybe executed: _open_failed's QICLOSE undoes it
            self.stats.commands_lost += 1
            raise OpenError(COMMAND_LOST, str(exc)) from None
        except AtTimeout as exc:  # flowchart: no answer in 150 s -> close the connection
            raise OpenError(COMMAND_TIMEOUT, str(exc)) from None
        except ChannelClosed as exc:
            raise OpenError(CHANNEL_CLOSED, str(exc)) from None
        except ValueError as exc:  # the helper's own checks (name too long for this family ...)
            raise OpenError(INVALID_HOST, str(exc)) from None
        timeout = env.profile.open_timeout(is_ip_literal(msock.host))
        with trio.move_on_after(timeout):
            await wait_any(msock.opened, msock.lost)
        if msock.opened.is_set():
            assert msock.open_result is not None
            return msock.open_result
        if msock.lost.is_set():
            raise OpenError(CONTEXT_LOST, f"context {msock.context_id} lost while opening")
        self.stats.open_timeouts += 1
        raise OpenError(OPEN_TIMEOUT, f"no +QIOPEN URC within {timeout:g} s")

    async def _open_failed(self, msock: ModuleSocket, error: OpenError) -> OpenError:
        """Close the ID (manual: also after a failed open), count and report the failure."""
        await self._discard(msock)
        log.info("connect_id %d: %s %s failed to open: %s", msock.connect_id, msock.service_type,
                 _where(msock), error.detail, extra=log_fields(msock))
        if error.reason in CONTEXT_OPEN_FAILURES:
            self.link.report_open(msock.context_id, False)
        elif error.reason in REMOTE_OPEN_FAILURES:
            self.link.report_open(msock.context_id, False, remote=msock.remote)
        return error

    async def _collided(self, msock: ModuleSocket, held: list[ModuleSocket]) -> None:
        """563: QICLOSE the ID unless the module gave it to an incoming connection meanwhile."""
        assert self.pool is not None
        self.dispatcher.unregister(msock)
        if self.pool.owner(msock.connect_id) is not msock or not msock.begin_close():
            return
        ok = False
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
            ok = await self._qiclose(msock.env.at, msock.connect_id)
        msock.end_close()
        if ok:
            held.append(msock)
        else:
            self.pool.quarantine(msock.connect_id, msock)

    async def _discard(self, msock: ModuleSocket) -> None:
        with trio.CancelScope(shield=True):
            await self.close_socket(msock, count=False)

    # -- close --------------------------------------------------------------------------------
    async def close_socket(self, msock: ModuleSocket, *, count: bool = True) -> None:
        """AT+QICLOSE, then free the ID; shielded so a cancelled caller cannot leak the ID."""
        if not msock.begin_close():
            return
        msock.governor_scope.cancel()
        ok = False
        if self._same_session(msock):
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE):
                ok = await self._qiclose(msock.env.at, msock.connect_id)
        if msock.push_capable:
            msock.env.at.set_push(msock.connect_id, False)
        self.dispatcher.unregister(msock)
        self.scheduler.forget(msock.connect_id)
        assert self.pool is not None
        if ok:
            self.pool.release(msock.connect_id, msock)
            self.stats.closed += count
        else:
            self.pool.quarantine(msock.connect_id, msock)
        msock.end_close()
        if count:
            why = f"failed: {msock.failure.detail}" if msock.failure else (
                "remote closed" if msock.remote_closed else "closed")
            log.log(logging.INFO if ok else logging.WARNING,
                    "connect_id %d closed (%s)%s", msock.connect_id, why,
                    "" if ok else "; AT+QICLOSE unanswered, the ID stays quarantined",
                    extra=log_fields(msock))

    def _same_session(self, msock: ModuleSocket) -> bool:
        """False once the module rebooted (or the session ended) since the socket was opened:
        its sockets are gone, and a QICLOSE now would only wait out its deadline in the FIFO in
        front of the supervisor's commands. The ID stays quarantined until reset_stale()."""
        return (
            msock.generation == self.link.module_generation and msock.env.at is self.link.at
        )

    # -- incoming connections (URC side: no AT here) -------------------------------------------
    def _on_incoming(self, urc: Incoming) -> None:
        env, pool = self._env, self.pool
        if env is None or pool is None or urc.connect_id not in pool.connect_ids:
            return
        listener = self.dispatcher.sockets.get(urc.server_id)
        msock = ModuleSocket(
            env, listener.context_id if listener else 1, "TCP INCOMING", urc.remote_ip,
            urc.remote_port, lost=listener.lost if listener else None,
        )
        msock.connect_id, msock.server_id = urc.connect_id, urc.server_id
        msock.opened_ok()
        msock.generation = self.link.module_generation
        msock.label = listener.label if listener else ""
        msock.push_capable = self._push_capable(env, "TCP INCOMING")  # buffer mode until drained
        self._displace(pool.claim(urc.connect_id, msock), env)
        self.dispatcher.register(msock)
        self._govern(msock)
        self.stats.accepted += 1
        log.info("connect_id %d opened: incoming from %s (server %d)", urc.connect_id,
                 msock.remote, urc.server_id, extra=log_fields(msock))
        if listener is None or listener.service_type != "TCP LISTENER" or not listener.offer(msock):
            self.stats.incoming_rejected += 1
            log.warning("incoming connection %s on connect_id %d has no listener to take it",
                        msock.remote, urc.connect_id, extra=log_fields(msock))
            self._janitor_in.send_nowait(msock)

    def _displace(self, previous: object, env: SocketEnv) -> None:
        """The module gave away an ID we held: the opener sees 563, an open socket is dead."""
        if not isinstance(previous, ModuleSocket):
            return
        if previous.machine.state is SocketState.OPENING:
            previous.on_open_result(env.profile.error_code("socket_id_used") or 563)
        elif not previous.closing:
            previous.fail(ConnectionLost(COMMAND_ERROR, "the module reassigned its connect_id"))

    def _on_incoming_full(self, urc: IncomingFull) -> None:
        self.stats.incoming_full += 1
        log.warning("module refused an incoming connection: incoming full (server %s)",
                    urc.server_id)

    # -- introspection ------------------------------------------------------------------------
    @property
    def ids_in_use(self) -> int:
        return self.pool.in_use if self.pool else 0

    @property
    def ids_available(self) -> int:
        return self.pool.available if self.pool else 0

    @property
    def queued(self) -> int:
        return self.pool.queued if self.pool else 0

    @property
    def unacked_bytes(self) -> int:
        return sum(s.unacked for s in self.dispatcher.sockets.values())

    @property
    def unacked_by_connect_id(self) -> dict[int, int]:
        """Unacknowledged bytes of every open module socket (for the per-connect_id gauge)."""
        return {s.connect_id: s.unacked for s in self.dispatcher.sockets.values()}

    def connection_count(self, context_id: int | None = None) -> int:
        """Module sockets open now (on `context_id` when given): what a context cycle resets."""
        return sum(1 for s in self.dispatcher.sockets.values()
                   if context_id is None or s.context_id == context_id)

    def connections(self) -> list[dict[str, Any]]:
        """Snapshot for `modemctl connections`: one row per module socket."""
        now = trio.current_time()
        rows = [s.snapshot(now) for s in self.dispatcher.sockets.values()]
        return sorted(rows, key=lambda r: r["connect_id"])


def log_fields(msock: ModuleSocket) -> dict[str, Any]:
    """Structured log fields of a module socket (journal: CONNECT_ID=3 FORWARD=web)."""
    return {"CONNECT_ID": msock.connect_id, "FORWARD": msock.label or None}


def _where(msock: ModuleSocket) -> str:
    if msock.service_type in ("TCP LISTENER", "UDP SERVICE"):
        return f"on module port {msock.local_port}"
    return f"to {msock.remote}"


__all__ = ["ConnectionLost", "OpenError", "SocketError", "SocketManager", "log_fields"]
