"""Unit tests of the connect_id pool, the turn scheduler and the URC dispatcher (no emulator)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from modemd.at.urc import Closed, Incoming, OpenResult, Recv
from modemd.sockets.dispatcher import UrcDispatcher
from modemd.sockets.errors import QUEUE_FULL, QUEUE_TIMEOUT, SocketError
from modemd.sockets.pool import CLEANING, FREE, QUARANTINED, USED, ConnectIdPool
from modemd.sockets.scheduler import TurnScheduler


def test_pool_takes_ids_from_the_top():
    pool = ConnectIdPool(range(0, 4), queue_limit=2)
    a, b = object(), object()
    assert pool.try_acquire(a) == 3
    assert pool.try_acquire(b) == 2
    assert pool.in_use == 2 and pool.available == 2
    assert not pool.release(3, b)  # not the owner
    assert pool.release(3, a)
    assert pool.try_acquire(b) == 3


def test_pool_incoming_claim_displaces_opener():
    pool = ConnectIdPool(range(0, 2), queue_limit=2)
    opener, incoming = object(), object()
    cid = pool.try_acquire(opener)
    assert pool.claim(cid, incoming) is opener
    assert pool.owner(cid) is incoming
    assert not pool.release(cid, opener)  # the opener must not free the incoming's ID
    assert pool.slot(cid).state == USED


def test_pool_cleaning_and_quarantine():
    pool = ConnectIdPool(range(0, 3), queue_limit=2)
    owner = object()
    cid = pool.try_acquire(owner)
    assert not pool.begin_cleaning(cid)  # owned: reset_stale must not touch it
    pool.quarantine(cid, owner)
    assert pool.slot(cid).state == QUARANTINED
    assert pool.begin_cleaning(cid)
    assert pool.slot(cid).state == CLEANING
    pool.end_cleaning(cid, closed=False)
    assert pool.slot(cid).state == QUARANTINED
    assert pool.begin_cleaning(cid)
    pool.end_cleaning(cid, closed=True)
    assert pool.slot(cid).state == FREE


async def test_pool_queue_fifo_limit_and_deadline(mock_clock):
    pool = ConnectIdPool(range(0, 1), queue_limit=2)
    holder = object()
    assert pool.try_acquire(holder) == 0
    got: list[tuple[str, int]] = []

    async def wait(name: str, timeout: float) -> None:
        try:
            got.append((name, await pool.acquire(name, timeout)))
        except SocketError as exc:
            got.append((name, exc.reason))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "first", 10)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wait, "second", 1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wait, "third", 10)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [("third", QUEUE_FULL)]
        assert pool.queued == 2
        await trio.sleep(2)  # "second" times out
        assert ("second", QUEUE_TIMEOUT) in got
        pool.release(0, holder)
    assert ("first", 0) in got
    assert pool.owner(0) == "first"
    assert pool.queued == 0


async def test_pool_cancelled_waiter_passes_its_grant_on():
    pool = ConnectIdPool(range(0, 1), queue_limit=4)
    holder = object()
    pool.try_acquire(holder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.acquire, "a", 10)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert pool.queued == 0
    pool.release(0, holder)
    assert pool.slot(0).state == FREE


async def test_scheduler_round_robin_and_idle_first():
    sched = TurnScheduler(depth=1)
    order: list[str] = []
    gate = trio.Event()

    async def work(key: str, n: int) -> None:
        for _ in range(n):
            async with sched.turn(key):
                order.append(key)
                await gate.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(work, "bulk1", 6)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(work, "bulk2", 6)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        gate = trio.Event()
        for _ in range(3):
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
            gate = trio.Event()
        nursery.start_soon(work, "small", 1)
        await trio.testing.wait_all_tasks_blocked()
        while len(order) < 13:
            gate.set()
            gate = trio.Event()
            await trio.testing.wait_all_tasks_blocked()
        gate.set()
    # bulk sockets alternate; the newcomer is served at the next free turn
    first = order[:4]
    assert first == ["bulk1", "bulk2", "bulk1", "bulk2"]
    small_at = order.index("small")
    assert small_at <= 5
    assert order.count("bulk1") == order.count("bulk2") == 6


async def test_scheduler_cancelled_taker_keeps_no_slot():
    """A caller cancelled while taking a free turn must not hold the slot forever."""
    sched = TurnScheduler(depth=2)
    for _ in range(3):
        with trio.CancelScope() as scope:
            scope.cancel()
            async with sched.turn("gone"):
                raise AssertionError("a cancelled caller got its turn")
    assert sched.busy == 0
    async with sched.turn("next"):
        assert sched.busy == 1


async def test_scheduler_background_turns_never_fill_the_line():
    """Eleven ACK polls fired together (sockets opened together) hold at most one slot: a data
    command arriving behind them goes next, not behind all eleven."""
    sched = TurnScheduler(depth=2)
    order: list[str] = []
    gates: dict[str, trio.Event] = {}

    async def command(key: str, background: bool) -> None:
        async with sched.turn(key, background=background):
            order.append(key)
            gates[key] = trio.Event()
            await gates[key].wait()

    async with trio.open_nursery() as nursery:
        for i in range(11):
            nursery.start_soon(command, f"ack{i}", True)
            await trio.testing.wait_all_tasks_blocked()
        assert (sched.busy, sched.background_busy, sched.waiting) == (1, 1, 10)
        nursery.start_soon(command, "data", False)
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["ack0", "data"]  # the free slot went to the data command at once
        assert sched.waiting == 10
        while sched.busy:
            for gate in list(gates.values()):
                gate.set()  # the running commands finish; the next waiting polls follow
            await trio.testing.wait_all_tasks_blocked()
            assert sched.background_busy <= 1
    assert sorted(order) == sorted([f"ack{i}" for i in range(11)] + ["data"])
    assert (sched.busy, sched.background_busy, sched.waiting) == (0, 0, 0)


async def test_scheduler_background_turn_is_not_starved_by_bulk():
    """Two bulk sockets keep both slots busy; an ACK poll still gets its turn in the rotation."""
    sched = TurnScheduler(depth=2)
    order: list[str] = []
    gate = trio.Event()

    async def work(key: str, n: int, background: bool = False) -> None:
        for _ in range(n):
            async with sched.turn(key, background=background):
                order.append(key)
                await gate.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(work, "bulk1", 20)
        nursery.start_soon(work, "bulk2", 20)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(work, "ack", 1, True)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(order) == ["bulk1", "bulk2"] and sched.waiting == 1
        while len(order) < 41:
            gate.set()
            gate = trio.Event()
            await trio.testing.wait_all_tasks_blocked()
        gate.set()
    # granted the first freed slot (its last turn is the oldest); trio may run the two granted
    # tasks in either order
    assert order.index("ack") in (2, 3)


class FakeSocket:
    def __init__(self, connect_id: int) -> None:
        self.connect_id = connect_id
        self.events: list = []

    def on_recv(self) -> None:
        self.events.append("recv")

    def on_closed(self) -> None:
        self.events.append("closed")

    def on_open_result(self, result: int) -> None:
        self.events.append(("open", result))


@pytest.mark.parametrize("cid", [0, 11])
def test_dispatcher_routes_by_connect_id(cid):
    incoming: list = []
    disp = UrcDispatcher(incoming.append, lambda urc: None)
    sock = FakeSocket(cid)
    disp.register(sock)  # type: ignore[arg-type]
    disp.route(Recv(cid, 10))
    disp.route(Closed(cid))
    disp.route(OpenResult(cid, 0))
    disp.route(Recv(5 if cid != 5 else 6))
    disp.route(Incoming(3, cid, "127.0.0.1", 5000))
    assert sock.events == ["recv", "closed", ("open", 0)]
    assert disp.orphans == 1
    assert incoming == [Incoming(3, cid, "127.0.0.1", 5000)]
