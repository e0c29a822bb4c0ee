"""The AT channel: the serial port's only reader and only writer.

Two tasks share one sans-IO AtProtocol:
- the reader feeds every byte to the protocol and routes its events: URCs to subscribers (trio memory
  channels), prompts and final results to the writer;
- the writer takes queued commands one at a time, writes each only after the previous one's final
  result (manual note 1), answers the `>` prompt with the payload, and enforces the command's deadline.

A caller that is cancelled while its command is queued withdraws it; once written, the command runs to
its final result or deadline anyway, so the module and the protocol never disagree about what is in
flight.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import trio

from .protocol import (
    AtProtocol,
    Command,
    Done,
    PromptWanted,
    ProtocolError,
    Response,
    Unknown,
    UrcEvent,
)
from .urc import ModuleReady, PoweredDown, Urc, parse_urc

log = logging.getLogger("modemd.at")


class AtError(Exception):
    """Base of the channel's errors."""


class AtTimeout(AtError):
    def __init__(self, command: Command, seconds: float) -> None:
        super().__init__(f"{command.name}: no final result within {seconds:g} s")
        self.command = command
        self.seconds = seconds


class AtCommandError(AtError):
    def __init__(self, response: Response) -> None:
        what = "payload longer than announced (line noise)" if response.corrupt else response.final
        super().__init__(f"{response.command.name}: {what}")
        self.response = response

    @property
    def code(self) -> int | None:
        return self.response.error_code


class ChannelClosed(AtError):
    """The port went away or the channel stopped; the command was not (fully) executed."""


class AtModuleReset(ChannelClosed):
    """The module rebooted (`RDY` / `POWERED DOWN`) with the command in flight: it will never
    answer, so the caller hears at once instead of waiting out the deadline."""


class _Reset:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Transport(Protocol):
    async def receive_some(self, max_bytes: int = ...) -> bytes: ...
    async def send_all(self, data: bytes) -> None: ...


class Observer:
    """Hooks for metrics; the default does nothing."""

    def command_done(self, name: str, seconds: float, final: str) -> None: ...
    def command_timeout(self, name: str) -> None: ...
    def urc(self, urc: Urc) -> None: ...
    def unknown_line(self, text: str) -> None: ...
    def urc_dropped(self, urc: Urc) -> None: ...


class _Request:
    __slots__ = ("command", "done", "response", "error", "withdrawn")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.done = trio.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None
        self.withdrawn = False

    def finish(self, response: Response | None = None, error: BaseException | None = None) -> None:
        self.response, self.error = response, error
        self.done.set()


class AtChannel:
    """Serialises commands over one transport and fans URCs out to subscribers."""

    def __init__(self, transport: Transport, *, observer: Observer | None = None) -> None:
        self.transport = transport
        self.protocol = AtProtocol()
        self.observer = observer or Observer()
        self._queue_in, self._queue_out = trio.open_memory_channel(math.inf)
        self._inbox_in, self._inbox_out = trio.open_memory_channel(math.inf)
        self._subscribers: list[trio.MemorySendChannel[Urc]] = []
        self._current: _Request | None = None
        self._closed: BaseException | None = None
        self.last_rx = -math.inf       # trio time of the last byte read
        self.last_final = -math.inf    # trio time of the last final result (module is answering)
        self.commands_sent = 0

    # -- public API ---------------------------------------------------------------------------
    async def command(self, command: Command, *, check: bool = True) -> Response:
        """Run `command`; raise AtCommandError on ERROR/+CME ERROR when `check`, AtTimeout."""
        if self._closed is not None:
            raise ChannelClosed(str(self._closed) or "AT channel is closed")
        request = _Request(command)
        self._queue_in.send_nowait(request)
        try:
            await request.done.wait()
        except trio.Cancelled:
            request.withdrawn = True
            raise
        if request.error is not None:
            raise request.error
        assert request.response is not None
        if check and request.response.error:
            raise AtCommandError(request.response)
        return request.response

    def subscribe(self, buffer: int = 1024) -> trio.MemoryReceiveChannel[Urc]:
        """A new stream of every URC from now on; close the receiver to unsubscribe."""
        send, receive = trio.open_memory_channel(buffer)
        self._subscribers.append(send)
        return receive

    def set_push(self, connect_id: int, on: bool) -> None:
        self.protocol.set_push(connect_id, on)

    def seconds_since_answer(self) -> float:
        return trio.current_time() - self.last_final

    @property
    def queued(self) -> int:
        return self._queue_out.statistics().current_buffer_used

    # -- tasks --------------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the reader and writer until the transport fails or the caller cancels."""
        self._closed = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                task_status.started()
        except BaseException as exc:
            self._close(exc)
            raise
        self._close(ChannelClosed("AT channel stopped"))

    def reset(self) -> None:
        """The module rebooted: forget the framing state (called by the supervisor)."""
        self.protocol.reset()

    def _close(self, exc: BaseException) -> None:
        reason = exc if isinstance(exc, AtError) else ChannelClosed(f"AT channel stopped: {exc!r}")
        if not isinstance(reason, ChannelClosed):
            reason = ChannelClosed(str(reason))
        self._closed = reason
        if self._current is not None and not self._current.done.is_set():
            self._current.finish(error=reason)
        while True:
            try:
                self._queue_out.receive_nowait().finish(error=reason)
            except (trio.WouldBlock, trio.EndOfChannel):
                break

    async def _reader(self) -> None:
        while True:
            data = await self.transport.receive_some(65536)
            self.last_rx = trio.current_time()
            self.protocol.receive(data)
            while (event := self.protocol.next_event()) is not None:
                self._dispatch(event)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, UrcEvent):
            urc = parse_urc(event.text, event.payload)
            self._publish(urc)
            if isinstance(urc, (ModuleReady, PoweredDown)) and self.protocol.in_flight is not None:
                self.protocol.abort()
                self._inbox_in.send_nowait(_Reset(urc.text))
        elif isinstance(event, (Done, PromptWanted)):
            if isinstance(event, Done):
                self.last_final = trio.current_time()
            self._inbox_in.send_nowait(event)
        elif isinstance(event, Unknown):
            log.warning("unexpected line from module: %r", event.text[:200])
            self.observer.unknown_line(event.text)

    def _publish(self, urc: Urc) -> None:
        self.observer.urc(urc)
        for send in list(self._subscribers):
            try:
                send.send_nowait(urc)
            except trio.WouldBlock:
                log.warning("URC subscriber is not keeping up; dropped %r", urc)
                self.observer.urc_dropped(urc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)

    async def _writer(self) -> None:
        async for request in self._queue_out:
            if request.withdrawn:
                continue
            self._current = request
            await self._execute(request)
            self._current = None

    async def _execute(self, request: _Request) -> None:
        command = request.command
        self._drain_inbox()
        started = trio.current_time()
        try:
            line = self.protocol.send(command)
        except ProtocolError as exc:  # a malformed command line fails its caller, not the channel
            request.finish(error=exc)
            return
        await self.transport.send_all(line)
        self.commands_sent += 1
        with trio.move_on_after(command.timeout):
            async for event in self._inbox_out:
                if isinstance(event, PromptWanted):
                    await self.transport.send_all(self.protocol.send_data())
                    continue
                if isinstance(event, _Reset):
                    request.finish(error=AtModuleReset(
                        f"{command.name}: the module reset ({event.text}) before answering"
                    ))
                    return
                assert isinstance(event, Done)
                final = event.response.final
                self.observer.command_done(command.name, trio.current_time() - started, final)
                request.finish(event.response)
                return
        self.protocol.abort()
        self.observer.command_timeout(command.name)
        log.warning("%s: no final result within %g s", command.name, command.timeout)
        request.finish(error=AtTimeout(command, command.timeout))

    def _drain_inbox(self) -> None:
        """Drop results of a command that timed out earlier and answered late."""
        while True:
            try:
                self._inbox_out.receive_nowait()
            except trio.WouldBlock:
                return
