"""The fault catalogue (docs/reliability.md): the rows no other test covers, each against the emulator
on a real pty, with real local clients and real loopback servers.

In-process rigs (socket layer + proxy, or the whole supervisor stack) come first; the tests that need
the real daemon as a subprocess (SIGTERM, descriptor counts, SO_PEERCRED, secrets) come last.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import random
import shutil
import signal
import socket as pysocket
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from modemd.config import ProxyConfig, SupervisorConfig, parse_config
from modemd.diagnostics import task_tree
from modemd.emulator import Emulator, EmulatorConfig
from modemd.link import ModemLink
from modemd.profiles import get_profile
from modemd.proxy.proxy import Proxy
from modemd.proxy.socks5 import reply_code
from modemd.proxy.socks5_parser import REP_SUCCEEDED, encode_address
from modemd.serial import SerialPort
from modemd.sockets.manager import SocketManager
from modemd.supervisor.states import State
from modemd.supervisor.supervisor import Supervisor
from tests.conftest import count_sha_bytes, source_readable_by_others
from tests.sockets_helpers import (
    echo_handler,
    free_port,
    modem,
    payload,
    proxy_config,
    read_until_end,
    recv_all,
    recv_exactly,
    running_proxy,
    tcp_server,
)
from tests.supervisor_helpers import EmuPower, wait_state
from tests.test_proxy import forward_toml

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BUFFER = ProxyConfig(direct_push=False)  # buffer mode: the data comes with +QIRD


# -- helpers ----------------------------------------------------------------------------------------
async def wait_for(predicate, timeout: float = 60.0, step: float = 0.01) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)



async def socks_connect(port: int, host: str, target_port: int) -> tuple[trio.SocketStream, int]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x05\x01\x00")
    assert await recv_exactly(stream, 2) == b"\x05\x00"
    await stream.send_all(b"\x05\x01\x00" + encode_address(host, target_port))
    head = await recv_exactly(stream, 4)
    size = {1: 4, 4: 16}.get(head[3]) if len(head) == 4 else 0
    if size is None:
        size = (await recv_exactly(stream, 1))[0]
    await recv_exactly(stream, size + 2)
    return stream, head[1] if len(head) > 1 else -1


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Full:
    """The daemon's stack in-process: emulator, supervisor, socket manager, proxy."""

    emu: Any
    sup: Supervisor
    link: ModemLink
    manager: SocketManager
    proxy: Proxy
    power: EmuPower


@asynccontextmanager
async def full_stack(toml: str = "", *, reconcile: float = 10.0, **emu_kw):
    emu_kw.setdefault("boot_delay", 0.05)
    emu_kw.setdefault("qiact_delay", 0.05)
    async with Emulator.open(EmulatorConfig(family="bg96", **emu_kw)) as emu:
        cfg = parse_config(toml, emulate=True)
        cfg = dataclasses.replace(
            cfg,
            modem=dataclasses.replace(cfg.modem, port=emu.tty_path, lock_dir="", model="bg96"),
            supervisor=dataclasses.replace(cfg.supervisor, reconcile_interval=reconcile),
            proxy=dataclasses.replace(cfg.proxy, linger_seconds=0.5),
        )
        link = ModemLink()
        manager = SocketManager(link, cfg.proxy, cfg.supervisor)
        power = EmuPower(emu)
        sup = Supervisor(
            cfg, link, power=power, reset_stale=manager.reset_stale, rng=lambda: 0.0,
            open_port=lambda: SerialPort.open(emu.tty_path, 115200, lock_dir=None),
        )
        proxy = Proxy(cfg, manager)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            await nursery.start(proxy.run)
            await nursery.start(sup.run)
            with trio.fail_after(300):
                await link.wait_serving(1)
            yield Full(emu, sup, link, manager, proxy, power)
            nursery.cancel_scope.cancel()


def streamer(data: bytes):
    """A server that sends `data`, then waits (it never closes first)."""

    async def handler(stream, server):
        view = memoryview(data)
        for i in range(0, len(view), 16384):
            await stream.send_all(view[i : i + 16384])
        await trio.sleep_forever()

    return handler


def gated_streamer(data: bytes, split: int, gate: trio.Event):
    """`streamer`, but the bytes from `split` on are sent only once `gate` is set: a fault armed
    before setting it is sure to meet data still on its way through the module (on a starved
    machine the whole stream may otherwise pass before the test arms the fault)."""

    async def handler(stream, server):
        await stream.send_all(data[:split])
        await gate.wait()
        view = memoryview(data)
        for i in range(split, len(view), 16384):
            await stream.send_all(view[i : i + 16384])
        await trio.sleep_forever()

    return handler


# -- QIOPEN result codes, DNS ---------------------------------------------------------------------
async def test_every_qiopen_result_code_through_a_forward_and_socks(caplog):
    """+QIOPEN: id,<550..574>: a forward client is reset, a SOCKS client gets the reply of the code's
    canonical reason; 563 (socket_id_used) closes that ID and opens on another one."""
    profile = get_profile("bg96")
    async with modem() as rig, tcp_server(echo_handler) as server:
        fwd, socks = free_port(), free_port()
        toml = forward_toml("f", f"tcp:127.0.0.1:{fwd}", server.port) + (
            f'[socks]\nlisten = "tcp:127.0.0.1:{socks}"\n'
        )
        async with running_proxy(rig, proxy_config(toml, linger_seconds=0.2)) as proxy:
            for code in range(550, 575):
                name = profile.error_name(code)
                rig.emu.open_fail(code)
                client = await trio.open_tcp_stream("127.0.0.1", fwd)
                if name == "socket_id_used":
                    await client.send_all(b"ping")
                    assert await recv_exactly(client, 4) == b"ping"
                    await client.aclose()
                else:
                    got, how = await read_until_end(client)
                    assert (got, how) == (b"", "reset"), code
                    await client.aclose()
                    assert proxy.flows["f"].refused[name] == 1, code
                rig.emu.open_fail(code)
                stream, reply = await socks_connect(socks, "127.0.0.1", server.port)
                expected = REP_SUCCEEDED if name == "socket_id_used" else reply_code(name)
                assert reply == expected, (code, name)
                await stream.aclose()
                await wait_for(lambda: rig.manager.ids_in_use == 0)
            assert rig.manager.stats.id_collisions == 2
            assert rig.manager.pool.ids_in("quarantined") == []
    assert "Traceback" not in caplog.text


async def test_dns_failure_resets_the_forward_client_and_is_counted():
    async with modem(hosts={"known.test": "127.0.0.1"}) as rig:
        port = free_port()
        toml = '[[forward]]\nname = "d"\nlisten = "tcp:127.0.0.1:%d"\nremote = "nowhere.test:80"\n'
        async with running_proxy(rig, proxy_config(toml % port)) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            assert await read_until_end(client) == (b"", "reset")
            await client.aclose()
            assert proxy.flows["d"].refused["dns_failed"] == 1
            assert rig.manager.ids_in_use == 0


# -- the AT stream: noise and resets inside payloads, ERROR to data commands --------------------
@pytest.mark.parametrize("mode", ["buffer", "push"])
async def test_garbage_inside_a_payload_resets_and_never_corrupts(mode, caplog):
    """Line noise adds bytes inside a +QIRD payload (buffer mode) or a pushed "recv" payload: it
    overruns its announced length, so its bytes are not delivered; the client is reset (it got a
    prefix of the stream, nothing else)."""
    data = payload(300_000)
    gate = trio.Event()
    async with modem(proxy_cfg=ProxyConfig(direct_push=mode == "push"), baud=921600) as rig, \
            tcp_server(gated_streamer(data, 100_000, gate)) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(forward_toml("g", f"tcp:127.0.0.1:{port}",
                                                                server.port))) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            got = await recv_exactly(client, 50_000)
            rig.emu.qird_fault("garbage")
            gate.set()  # the rest of the stream passes the module after the fault is armed
            rest, how = await read_until_end(client)
            got += rest
            assert how == "reset"
            assert data.startswith(got) and len(got) < len(data)
            await client.aclose()
            assert proxy.flows["g"].resets["download_corrupt"] == 1
            assert rig.manager.stats.lost["download_corrupt"] == 1
            assert rig.stack.channel.protocol.counters["payload_overruns"] == 1
            await wait_for(lambda: rig.manager.ids_in_use == 0)
            async with await trio.open_tcp_stream("127.0.0.1", port) as again:  # still serving
                assert await recv_exactly(again, 1000) == data[:1000]
    assert "longer than announced" in caplog.text


async def test_module_reset_inside_a_qird_payload(mock_clock):
    """The module reboots half-way through a +QIRD payload (its RDY is swallowed as payload bytes):
    the command's deadline ends it, the client is reset with an uncorrupted prefix, the supervisor
    recovers and new connections work."""
    data = payload(200_000)
    async with tcp_server(streamer(data)) as server:
        port = free_port()
        async with full_stack(forward_toml("r", f"tcp:127.0.0.1:{port}", server.port)
                              + "[proxy]\ndirect_push = false\n", baud=115200) as full:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            got = await recv_exactly(client, 3000)
            full.emu.qird_fault("reset")
            rest, how = await read_until_end(client, timeout=600)
            got += rest
            assert how == "reset"
            assert data.startswith(got) and len(got) < len(data)
            await client.aclose()
            with trio.fail_after(600):
                await wait_state(full.sup, State.SERVING)
                await full.link.wait_serving(1)
            async with await trio.open_tcp_stream("127.0.0.1", port) as again:
                assert await recv_exactly(again, 2000) == data[:2000]


@pytest.mark.parametrize("fault", ["pdpdeact", "power_cycle"])
async def test_abnormal_end_mid_transfer_resets_with_an_intact_prefix(fault):
    """The network drops the context (+QIURC "pdpdeact") or the module reboots (RDY) while a
    download runs through the whole daemon stack: the client is reset, never a clean EOF, and what
    it got is a prefix of the stream; the supervisor brings the context back and serves again."""
    data = payload(3_000_000)
    async with tcp_server(streamer(data)) as server:
        port = free_port()
        async with full_stack(forward_toml("m", f"tcp:127.0.0.1:{port}", server.port),
                              baud=921600) as full:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            got = await recv_exactly(client, 100_000)
            if fault == "pdpdeact":
                full.emu.pdp_deactivate(1)
            else:
                await full.emu.power_on()
            rest, how = await read_until_end(client)
            got += rest
            assert how == "reset"
            assert data.startswith(got) and len(got) < len(data)
            await client.aclose()
            with trio.fail_after(60):
                await full.link.wait_serving(1)
            async with await trio.open_tcp_stream("127.0.0.1", port) as again:
                assert await recv_exactly(again, 5000) == data[:5000]
            assert full.proxy.flows["m"].resets["context_lost"] >= 1


async def test_error_to_qisend_is_retried_then_resets():
    """QISEND answered ERROR (not SEND FAIL): up to 3 retries keep the stream intact; a 4th ERROR in
    a row resets the client, never a clean EOF."""
    data = payload(200_000)
    async with modem() as rig, tcp_server(echo_handler) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(forward_toml("e", f"tcp:127.0.0.1:{port}",
                                                                server.port))) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            rig.emu.error_next("QISEND", 3)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, data)
                assert await recv_exactly(client, len(data)) == data
            count_sha_bytes(2 * len(data))
            assert rig.manager.stats.send_retries_error == 3
            rig.emu.error_next("QISEND", 4)
            await client.send_all(b"x" * 100)
            assert (await read_until_end(client))[1] == "reset"
            await client.aclose()
            assert proxy.flows["e"].resets["command_error"] == 1
            await wait_for(lambda: rig.manager.ids_in_use == 0)


async def test_qisend_errors_between_send_fails_are_not_in_a_row():
    """Regression: ERROR, SEND FAIL, ERROR, SEND FAIL ... on one chunk used to count every ERROR and
    reset a live connection after the 4th; a SEND FAIL shows the module took the command, so only
    ERRORs in a row count."""
    async with modem(proxy_cfg=BUFFER) as rig, tcp_server(echo_handler) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        emu = rig.emu

        async def alternate() -> None:
            for _ in range(5):
                emu.error_next("QISEND", 1)
                while emu._error_next["QISEND"]:
                    await trio.sleep(0)
                emu.send_fail(1)
                while emu._send_fail:
                    await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(alternate)
            await trio.sleep(0.01)
            with trio.fail_after(30):
                await msock.send(b"one chunk")
        assert rig.manager.stats.send_retries_error == 5 and rig.manager.stats.send_fail == 5
        assert msock.failure is None
        await msock.aclose()


async def test_error_to_qird_resets_the_client():
    data = payload(100_000)
    async with modem(proxy_cfg=BUFFER) as rig, tcp_server(streamer(data)) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(forward_toml("q", f"tcp:127.0.0.1:{port}",
                                                                server.port))) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            got = await recv_exactly(client, 10_000)
            rig.emu.error_next("QIRD", 1)
            rest, how = await read_until_end(client)
            assert how == "reset" and data.startswith(got + rest)
            await client.aclose()
            assert proxy.flows["q"].resets["command_error"] == 1
            await wait_for(lambda: rig.manager.ids_in_use == 0)


async def test_emulator_pwrkey_while_a_qisend_waits_for_its_payload():
    """Regression (emulator, found by the soak): PWRKEY stopped the session's input first and then
    waited for the line, which a QISEND held while waiting for its payload -- which could then never
    arrive: both waited forever and every later power command hung. Now the payload goes through
    and POWERED DOWN follows."""
    from tests.emulator.helpers import activate, open_client
    from tests.emulator.helpers import modem as raw_modem
    from tests.emulator.helpers import tcp_server as raw_server

    async with raw_modem() as (emu, port), raw_server() as (sport, accepted):
        await activate(port)
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,0"
        await port.write(b"AT+QISEND=0,5\r")
        await port.expect(b"> ")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(emu.pwrkey)
            await trio.sleep(0.05)
            await port.write(b"hello")
            with trio.fail_after(5):
                await port.expect(b"POWERED DOWN\r\n")
                while emu.powered:
                    await trio.sleep(0.01)


# -- module-side listeners ---------------------------------------------------------------------------
async def test_incoming_full_refuses_one_and_keeps_serving():
    """Every connect_id busy: the module answers a new remote with "incoming full"; modemd counts it
    and the listener keeps working once an ID is free again."""
    async with modem() as rig, tcp_server(echo_handler) as target:
        toml = (f'[[listen]]\nname = "in"\nprotocol = "tcp"\nmodule_port = 2020\n'
                f'target = "tcp:127.0.0.1:{target.port}"\n')
        async with running_proxy(rig, proxy_config(toml)) as proxy:
            await wait_for(lambda: _listener_up(rig, 2020))
            real = rig.emu.module_listen_port(2020)
            remotes = []
            for i in range(11):  # the listener holds one of the 12 IDs
                r = await trio.open_tcp_stream("127.0.0.1", real)
                await r.send_all(b"hi%02d" % i)
                assert await recv_exactly(r, 4) == b"hi%02d" % i
                remotes.append(r)
            extra = await trio.open_tcp_stream("127.0.0.1", real)
            assert (await read_until_end(extra))[0] == b""  # the module closed it
            await extra.aclose()
            await wait_for(lambda: rig.manager.stats.incoming_full == 1)
            await remotes.pop().aclose()
            await wait_for(lambda: rig.manager.ids_in_use == 11)
            async with await trio.open_tcp_stream("127.0.0.1", real) as late:
                await late.send_all(b"late")
                assert await recv_exactly(late, 4) == b"late"
            for r in remotes:
                await r.aclose()
            assert proxy.flows["in"].opened >= 12


def _listener_up(rig, module_port: int) -> bool:
    try:
        rig.emu.module_listen_port(module_port)
        return True
    except LookupError:
        return False


# -- local clients ---------------------------------------------------------------------------------
async def test_local_client_reset_mid_transfer_closes_the_module_socket():
    data = payload(2_000_000)
    closed = trio.Event()

    async def pour(stream, server):
        try:
            await stream.send_all(data)
            await trio.sleep_forever()
        finally:
            closed.set()

    async with modem(baud=921600) as rig, tcp_server(pour) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(forward_toml("x", f"tcp:127.0.0.1:{port}",
                                                                server.port))):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            assert await recv_exactly(client, 20_000) == data[:20_000]
            client.socket.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            client.socket.close()
            with trio.fail_after(10):
                await closed.wait()  # the remote saw the module socket close
            await wait_for(lambda: rig.manager.ids_in_use == 0)
            assert any(c.startswith("AT+QICLOSE=") for c in rig.emu.commands)


async def test_thousand_connections_churn_leaves_nothing_behind():
    """1000 open/close cycles through a forward (8 at a time): every connect_id comes back, and the
    process's descriptors and memory end where they started."""
    async def answer(stream, server):
        request = await recv_exactly(stream, 64)
        await stream.send_all(hashlib.sha256(request).digest())

    async with modem() as rig, tcp_server(answer) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(forward_toml("c", f"tcp:127.0.0.1:{port}",
                                                                server.port))) as proxy:
            async def one() -> None:
                request = os.urandom(64)
                async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                    await client.send_all(request)
                    assert await recv_all(client) == hashlib.sha256(request).digest()

            async def batch(n: int) -> None:
                limiter = trio.CapacityLimiter(8)

                async def limited() -> None:
                    async with limiter:
                        await one()

                async with trio.open_nursery() as nursery:
                    for _ in range(n):
                        nursery.start_soon(limited)

            await batch(50)  # warm-up: lazy imports, buffers, the pool's first allocations
            await wait_for(lambda: rig.manager.ids_in_use == 0)
            gc.collect()
            fds, rss = open_fds(), rss_kb()
            with trio.fail_after(120):
                await batch(1000)
            await wait_for(lambda: rig.manager.ids_in_use == 0)
            gc.collect()
            flow = proxy.flows["c"]
            assert flow.opened == flow.closed == 1050 and flow.active == 0
            assert flow.resets == {} and flow.refused == {}
            assert len(rig.emu.commands) > 4000
            assert open_fds() <= fds + 2, (fds, open_fds())
            assert rss_kb() - rss < 8 * 1024, (rss, rss_kb())
            assert rig.manager.dispatcher.sockets == {}


async def test_reload_under_load_keeps_unchanged_forwards_and_resets_removed_ones():
    """A reload while data flows: the unchanged forward's transfers finish intact, the removed
    forward's client is reset (never a clean EOF), the added forward serves at once."""
    up = payload(3_000_000)
    async with modem() as rig, tcp_server(echo_handler) as server:
        keep, gone, added = free_port(), free_port(), free_port()
        old = proxy_config(forward_toml("keep", f"tcp:127.0.0.1:{keep}", server.port)
                           + forward_toml("gone", f"tcp:127.0.0.1:{gone}", server.port))
        new = proxy_config(forward_toml("keep", f"tcp:127.0.0.1:{keep}", server.port)
                           + forward_toml("added", f"tcp:127.0.0.1:{added}", server.port))
        async with running_proxy(rig, old) as proxy:
            kept = [await trio.open_tcp_stream("127.0.0.1", keep) for _ in range(3)]
            doomed = await trio.open_tcp_stream("127.0.0.1", gone)
            results: list[bytes] = []

            async def echo_through(client) -> None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.send_all, up)
                    results.append(await recv_exactly(client, len(up)))

            async with trio.open_nursery() as nursery:
                for c in kept:
                    nursery.start_soon(echo_through, c)
                nursery.start_soon(doomed.send_all, b"z" * 100_000)
                await wait_for(lambda: proxy.flows["keep"].bytes_down > 200_000)
                gone = proxy.flows["gone"]  # no longer published after the reload
                assert await proxy.reload(new) == []
                got, how = await read_until_end(doomed)
                assert how == "reset"
                async with await trio.open_tcp_stream("127.0.0.1", added) as c:
                    await c.send_all(b"new")
                    assert await recv_exactly(c, 3) == b"new"
            assert results == [up, up, up]
            count_sha_bytes(6 * len(up))
            assert gone.resets["stopped"] == 1 and "gone" not in proxy.flows
            assert proxy.flows["keep"].resets == {}
            for c in [*kept, doomed]:
                await c.aclose()
            assert proxy.units == ["forward added", "forward keep"]


# -- the data promise ------------------------------------------------------------------------------
PROMISE_MB = float(os.environ.get("MODEMD_PROMISE_MB", "12"))  # per receive mode
CHUNKS = (1, 7, 1460, 1461, 4096, 65536, 65536, 65536)  # the client's writes
READS = (1, *[97] * 3, *[65536] * 16)  # the client's reads


async def _stall_watch(progress: list[int], scope: trio.CancelScope, quiet: float = 60.0) -> None:
    """Cancel `scope` when no stream has received a byte for `quiet` seconds (a real stall)."""
    last = -1
    while True:
        await trio.sleep(quiet)
        if progress[0] == last:
            scope.cancel()
            return
        last = progress[0]


async def _hash_echo(stream: trio.SocketStream, server) -> None:
    """Reads an 8-byte length N, echoes exactly N bytes back, then closes."""
    left = struct.unpack(">Q", await recv_exactly(stream, 8))[0]
    while left:
        data = await stream.receive_some(min(left, 65536))
        if not data:
            return
        await stream.send_all(data)
        left -= len(data)


@pytest.mark.parametrize("mode", ["push", "buffer"])
async def test_data_promise_sha256_under_nonfatal_faults(mode):
    """Faults that must not kill a connection -- SEND FAIL storms, lost recv URCs, URCs between every
    response line, garbage lines between frames, QISEND ERROR (retried), odd client chunking --
    injected while 4 duplex streams run: the SHA-256 of every stream matches, both ways. Both
    receive paths: direct push (+QIURC "recv" with payload) and buffer mode (+QIRD).

    MODEMD_PROMISE_MB (default 12 per mode) sets the total; the benchmark run uses 512."""
    streams = 4
    each = int(PROMISE_MB * 1_000_000 / (2 * streams))
    rng = random.Random(7)
    sup_cfg = SupervisorConfig(reconcile_interval=0.3)
    proxy_cfg = ProxyConfig(direct_push=mode == "push")
    async with modem(supervisor_cfg=sup_cfg, proxy_cfg=proxy_cfg) as rig, \
            tcp_server(_hash_echo) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(forward_toml("p", f"tcp:127.0.0.1:{port}",
                                                                server.port))) as proxy:
            rig.emu.interleave_urcs(True)
            done = trio.Event()
            moved: list[int] = []
            progress = [0]

            async def faults() -> None:
                kinds = ("sendfail", "droprecv", "garbage", "qisenderror")
                last_error = [-10.0]
                drained: list[float | None] = [-10.0]  # when the last SEND FAIL storm was over
                rig.emu.drop_recv_urc(2)  # the first notices are lost: only reconcile finds them
                while not done.is_set():
                    await trio.sleep(rng.uniform(0.05, 0.3))
                    kind = rng.choice(kinds)
                    now = trio.current_time()
                    if kind == "sendfail" and rig.emu._send_fail == 0:
                        # one storm at a time, and 3 s without one after it: a lone stream in
                        # its 1 s SEND FAIL back-off would otherwise meet storm after storm (a
                        # module whose buffer never empties: the daemon rightly waits forever)
                        if drained[0] is None:
                            drained[0] = now
                        elif now > drained[0] + 3:
                            rig.emu.send_fail(rng.randint(5, 30))
                            drained[0] = None
                    elif kind == "droprecv":
                        rig.emu.drop_recv_urc(rng.randint(1, 4))
                    elif kind == "garbage":
                        rig.emu.inject(b"\r\n\x00\xffnoise" + os.urandom(8).hex().encode()
                                       + b"\r\n")
                    elif kind == "qisenderror" and now > last_error[0] + 5:
                        # rare and single: 4 ERRORs in a row on one chunk are fatal by design, and
                        # a chunk in SEND FAIL back-off is retried only once a second
                        rig.emu.error_next("QISEND", 1)
                        last_error[0] = trio.current_time()

            async def one(seed: int) -> None:
                r = random.Random(seed)
                up_h, down_h = hashlib.sha256(), hashlib.sha256()
                got = 0
                async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                    await client.send_all(struct.pack(">Q", each))

                    async def send() -> None:
                        left = each
                        while left:
                            chunk = r.randbytes(min(left, r.choice(CHUNKS)))
                            up_h.update(chunk)
                            await client.send_all(chunk)
                            left -= len(chunk)

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(send)
                        while data := await client.receive_some(r.choice(READS)):
                            down_h.update(data)
                            got += len(data)
                            progress[0] += len(data)
                assert got == each, (got, each)  # the echo server closed after the whole stream
                assert down_h.hexdigest() == up_h.hexdigest()
                moved.append(2 * each)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(faults)
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as clients:
                        clients.start_soon(_stall_watch, progress, scope)
                        async with trio.open_nursery() as each_stream:
                            for i in range(streams):
                                each_stream.start_soon(one, i)
                        clients.cancel_scope.cancel()
                done.set()
                if scope.cancelled_caught:
                    for row in rig.manager.connections():
                        print("stuck:", row)
                    print("emu:", [rig.emu.socket_info(r["connect_id"])
                                   for r in rig.manager.connections()])
                    print("in flight:", rig.stack.channel.protocol.in_flight)
                    print(task_tree())
                    raise AssertionError(f"no progress for 60 s; moved {moved}")
            total = sum(moved)
            count_sha_bytes(total)
            stats = rig.manager.stats
            print(f"\ndata promise ({mode}): {total:,} bytes SHA-256 checked; SEND FAIL "
                  f"{stats.send_fail}, QISEND ERROR retries {stats.send_retries_error}, lost "
                  f"recv URCs recovered {stats.reconcile_recoveries}, pushed {stats.bytes_pushed:,}")
            assert total == 2 * each * streams
            assert proxy.flows["p"].resets == {}
            assert stats.send_fail > 0
            if mode == "push":
                assert stats.bytes_pushed > 0
            else:
                assert stats.reconcile_recoveries > 0 and stats.bytes_pushed == 0


# -- the real daemon (a subprocess) on a separate emulator process ------------------------------
SECRET, USER = "s3cret-Pa55word-Q7", "gateway-user-Z9"


class LiveDaemon:
    """`python -m modemd.emulator --control` plus `python -m modemd.cli --config` on its tty."""

    def __init__(self, tmp: Path, echo_port: int, extra: str = "", log_level: str = "info"):
        self.tmp = tmp
        self.ports = {k: free_port() for k in ("fwd", "socks", "metrics")}
        self.emulator = subprocess.Popen(
            [PY, "-m", "modemd.emulator", "--tty-link", str(tmp / "tty"), "--control",
             str(tmp / "emu.sock"), "--boot-delay", "0.05", "--qiact-delay", "0.05"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        )
        deadline = time.monotonic() + 20
        while not (tmp / "emu.sock").exists():
            assert time.monotonic() < deadline and self.emulator.poll() is None
            time.sleep(0.02)
        (tmp / "modemd.toml").write_text(f"""
[modem]
port = "{tmp / 'tty'}"
model = "bg96"
lock_dir = "{tmp}"
[pdp]
apn = "internet"
username = "{USER}"
password = "{SECRET}"
auth = "chap"
[[forward]]
name = "web"
listen = "tcp:127.0.0.1:{self.ports['fwd']}"
remote = "127.0.0.1:{echo_port}"
[[forward]]
name = "webunix"
listen = "unix:{tmp}/web.sock"
remote = "127.0.0.1:{echo_port}"
[[listen]]
name = "in"
module_port = 2020
target = "tcp:127.0.0.1:{echo_port}"
[metrics]
listen = "127.0.0.1:{self.ports['metrics']}"
[control]
socket = "{tmp}/control.sock"
mode = "0666"
{extra}
""")
        self.log = open(tmp / "daemon.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PY, "-m", "modemd.cli", "--config", str(tmp / "modemd.toml"), "--log-level",
             log_level], stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def emu(self, line: str) -> str:
        from modemd.emulator.control import send_control

        return send_control(str(self.tmp / "emu.sock"), line)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, "-m", "modemd.modemctl", "--socket", str(self.tmp / "control.sock"), *args],
            capture_output=True, text=True, timeout=60, check=check, cwd=ROOT,
        )

    def wait_serving(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            res = self.ctl("--json", "status", check=False)
            if res.returncode == 0 and (status := json.loads(res.stdout)).get("state") == "serving":
                return status
            time.sleep(0.1)
        raise AssertionError(f"not serving\n{self.output()}")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def output(self) -> str:
        self.log.flush()
        return (self.tmp / "daemon.log").read_text()

    def close(self) -> None:
        for proc in (self.proc, self.emulator):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.log.close()


@contextmanager
def live_daemon(echo_port: int, extra: str = "", log_level: str = "info"):
    tmp = Path(tempfile.mkdtemp(prefix="modemd-faults-"))
    os.chmod(tmp, 0o755)  # `nobody` must reach the control socket (SO_PEERCRED test)
    d = LiveDaemon(tmp, echo_port, extra, log_level)
    try:
        d.wait_serving()
        yield d
    finally:
        d.close()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def thread_server(handler):
    """A blocking loopback TCP server in a thread (the tests below are synchronous)."""
    import threading

    listener = pysocket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    conns: list[pysocket.socket] = []

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], conns
    finally:
        stop.set()
        thread.join()
        listener.close()
        for c in conns:
            c.close()


def _pour_forever(conn: pysocket.socket) -> None:
    """A remote that sends until the connection goes away."""
    block = os.urandom(65536)
    try:
        while True:
            conn.sendall(block)
    except OSError:
        pass


def _echo(conn: pysocket.socket) -> None:
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
    except OSError:
        pass


def _socks_connect_sync(port: int, target_port: int) -> pysocket.socket:
    s = pysocket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x01" + pysocket.inet_aton("127.0.0.1") + struct.pack(">H", target_port))
    reply = b""
    while len(reply) < 10:
        reply += s.recv(10 - len(reply))
    assert reply[1] == 0, reply
    return s


def test_sigterm_under_load_closes_every_module_socket():
    """SIGTERM while 8 connections move data: every module socket (the listener too) gets
    AT+QICLOSE, every local client is reset, the listeners and socket files are gone, and the
    daemon exits 0 well within its 15 s shutdown bound."""
    with thread_server(_pour_forever) as (port, _), \
            live_daemon(port, f'[socks]\nlisten = "tcp:127.0.0.1:{free_port()}"\n') as d:
        socks_port = int(_toml_value(d, "socks"))
        clients = [pysocket.create_connection(("127.0.0.1", d.ports["fwd"])) for _ in range(5)]
        unix = pysocket.socket(pysocket.AF_UNIX)
        unix.connect(str(d.tmp / "web.sock"))
        clients.append(unix)
        clients += [_socks_connect_sync(socks_port, port) for _ in range(2)]
        for c in clients:
            c.settimeout(30)
            assert c.recv(65536)  # data is flowing on every one
        opened = d.emu("sockets").split()[1:]
        assert len(opened) == 9, opened  # 8 clients + the module-side listener
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(20) == 0, d.output()
        elapsed = time.monotonic() - t0
        assert elapsed < 5.0, elapsed
        assert d.emu("sockets") == "ok", d.emu("sockets")  # nothing left open on the module
        closes = int(d.emu("count AT+QICLOSE=").split()[1])
        assert closes >= 9, closes
        for c in clients[:5] + clients[6:]:  # TCP clients: a reset, never a clean EOF
            with pytest.raises(ConnectionResetError):
                while c.recv(65536):
                    pass
        for c in clients:
            c.close()
        assert not (d.tmp / "web.sock").exists() and not (d.tmp / "control.sock").exists()
        for p in (d.ports["fwd"], socks_port, d.ports["metrics"]):
            with pytest.raises(ConnectionRefusedError):
                pysocket.create_connection(("127.0.0.1", p), timeout=5)
        print(f"\nSIGTERM under load: exit 0 after {elapsed:.2f} s, {closes} AT+QICLOSE")


def _toml_value(d: LiveDaemon, section: str) -> str:
    text = (d.tmp / "modemd.toml").read_text()
    body = text.split(f"[{section}]", 1)[1]
    return body.split('listen = "tcp:127.0.0.1:', 1)[1].split('"', 1)[0]


def test_local_connection_floods_keep_the_daemon_bounded():
    """300 idle connections to SOCKS (max_clients 16, handshake_timeout 2 s) and 60 to a forward
    whose connect_ids are all busy (queue_limit 8, queue_timeout 2 s): the daemon's descriptors
    stay bounded while it lasts and return to where they were; its memory barely moves."""
    extra = (f'[socks]\nlisten = "tcp:127.0.0.1:{free_port()}"\nmax_clients = 16\n'
             'handshake_timeout = 2.0\n[proxy]\nqueue_limit = 8\nqueue_timeout = 2.0\n'
             'linger_seconds = 1.0\n')
    with thread_server(_echo) as (port, _), live_daemon(port, extra) as d:
        socks_port = int(_toml_value(d, "socks"))
        time.sleep(0.5)
        base_fds, base_rss = d.fds(), rss_kb(d.proc.pid)
        with _fd_sampler(d) as peak:
            flood = []
            for _ in range(300):
                try:
                    flood.append(pysocket.create_connection(("127.0.0.1", socks_port)))
                except ConnectionResetError:
                    pass  # refused at the door (a busy machine: the reset overtook the connect)
            _settle(d, base_fds)  # every idle handshake timed out or was refused
        socks_peak = peak[0]
        assert socks_peak <= base_fds + 16 + 6, (base_fds, socks_peak)
        for s in flood:
            s.close()
        # a forward: 11 connections hold connect_ids (the listener holds the 12th), 60 more arrive
        held = [pysocket.create_connection(("127.0.0.1", d.ports["fwd"])) for _ in range(11)]
        for h in held:
            h.sendall(b"x")
            h.settimeout(10)
            assert h.recv(1) == b"x"
        with _fd_sampler(d) as peak:
            waiting = [pysocket.create_connection(("127.0.0.1", d.ports["fwd"]))
                       for _ in range(60)]
            refused = 0
            for w in waiting:
                w.settimeout(15)
                try:
                    if w.recv(1) == b"":
                        refused += 1
                except ConnectionResetError:
                    refused += 1
        assert refused == 60
        assert peak[0] <= base_fds + 11 + 8 + 6, (base_fds, peak[0])
        for s in [*held, *waiting]:
            s.close()
        _settle(d, base_fds)
        assert rss_kb(d.proc.pid) - base_rss < 10 * 1024
        assert json.loads(d.ctl("--json", "status").stdout)["state"] == "serving"
        print(f"\nfloods: daemon fds {base_fds} at rest, peaks {socks_peak} (SOCKS) and "
              f"{peak[0]} (forward queue)")


@contextmanager
def _fd_sampler(d: LiveDaemon):
    """The highest descriptor count of the daemon while the block runs (sampled every 20 ms)."""
    import threading

    peak, stop = [d.fds()], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], d.fds())
            except OSError:
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _settle(d: LiveDaemon, base: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while d.fds() > base + 2:
        assert time.monotonic() < deadline, (base, d.fds())
        time.sleep(0.05)


def _as_nobody() -> list[str] | None:
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    return None


@pytest.mark.skipif(_as_nobody() is None or not Path("/usr/bin/python3").exists()
                    or not source_readable_by_others(),
                    reason="needs root, setpriv or runuser, /usr/bin/python3 and a checkout nobody "
                           "can read to run modemctl as nobody")
def test_control_socket_refuses_privileged_commands_to_another_uid():
    """Through the real daemon: `nobody` may connect (mode 0666) and read status, but SO_PEERCRED
    keeps it from at, reboot, reload and reconnect; root may."""
    with thread_server(_echo) as (port, _), live_daemon(port) as d:
        def as_nobody(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [*_as_nobody(), "/usr/bin/python3", "-m", "modemd.modemctl", "--socket",
                 str(d.tmp / "control.sock"), *args],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                     "PYTHONDONTWRITEBYTECODE": "1"},
            )

        res = as_nobody("status")
        assert res.returncode == 0 and "serving" in res.stdout, res.stderr
        for args in (("at", "AT"), ("reboot",), ("reload",), ("reconnect",)):
            res = as_nobody(*args)
            assert res.returncode != 0, args
            assert "permission denied" in res.stderr, (args, res.stderr)
        assert d.ctl("at", "AT").returncode == 0  # root may
        status = json.loads(d.ctl("--json", "status").stdout)
        assert status["state"] == "serving" and status["reboots"] == 0


def test_secrets_never_leave_the_daemon():
    """The APN user name and password appear nowhere: not in the log (debug level, through a PDP
    cycle and a reload that changes the password), not in metrics, status, connections, nor in the
    answer to an AT query that makes the module echo them (AT+QICSGP=1), nor in error answers."""
    with thread_server(_echo) as (port, _), live_daemon(port, log_level="debug") as d:
        outputs = [
            d.ctl("status").stdout, d.ctl("--json", "status").stdout,
            d.ctl("--json", "connections").stdout,
            d.ctl("--json", "at", "AT+QICSGP=1").stdout,
            d.ctl("at", "AT+QICSGP=1").stdout,
        ]
        assert "***" in outputs[3]  # the module did echo them: redacted
        bad = d.ctl("at", "AT+QICSGP=1,1,\"x\"", check=False)
        outputs += [bad.stdout, bad.stderr]
        d.ctl("reconnect")  # a PDP cycle: QIDEACT, QICSGP with the credentials, QIACT
        d.wait_serving()
        (d.tmp / "modemd.toml").write_text((d.tmp / "modemd.toml").read_text().replace(
            SECRET, SECRET + "-new"))
        outputs.append(d.ctl("reload", check=False).stderr)
        with pysocket.create_connection(("127.0.0.1", d.ports["metrics"])) as m:
            m.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := m.recv(65536):
                body += chunk
        outputs.append(body.decode())
        outputs.append(d.output())
        for text in outputs:
            for secret in (SECRET, USER):
                assert secret not in text
