"""Every module family of the manuals, end to end: the whole daemon on the emulator, model = "auto".

Each family gets the same two runs of the complete daemon (`Daemon(cfg, args).run()` with `--emulate`
semantics: the daemon starts the in-process emulator of that family and finds out which module it is):

- `test_start_up_and_data_paths`: what a previous run left on the module is cleaned up (a stale socket;
  on BC25 NVRAM-persisted QICFG values), then a TCP forward carries 1 MB each way (SHA-256), a UDP
  forward keeps datagram boundaries, SOCKS5 CONNECT by domain name is resolved by the module, and the
  [[listen]] entries (TCP LISTENER, UDP SERVICE where the family has one) are reached from the
  emulator's real listening ports;
- `test_context_loss_and_utilities`: DNS (`modemctl resolve`), ping (`modemctl ping` and a timed-out
  request), NTP, the family's own error numbering (a busy module port), and the PDP context dropped by
  the network: back by `+QIURC: "pdpdeact"` (BC25 has no such URC: by the periodic AT+CGACT? check),
  after which a forward and the listener serve again.

What a family cannot do is refused at start with one line
(`test_configuration_the_family_cannot_serve_is_refused_in_one_line`), also with model = "auto",
once the module has identified itself.
Section numbers (§) are those of docs/seeds-comparison.md, which cites the manuals.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import re
import struct
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import modemd.emulator as emulator_package
import modemd.supervisor.supervisor as supervisor_module
from modemd.at.channel import AtChannel
from modemd.at.commands import QuectelAt
from modemd.config import load_config
from modemd.daemon import Daemon, UserError
from modemd.profiles import get_profile
from modemd.serial import SerialPort
from modemd.sockets.errors import OpenError
from modemd.supervisor.states import Timings
from tests.conftest import FAMILIES, wait_answering
from tests.sockets_helpers import (
    echo_handler,
    free_port,
    payload,
    recv_all,
    recv_exactly,
    sha,
    tcp_server,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

PY = sys.executable
MB = 1_000_000
# The context each family runs on: the top of its range where that is not 1 (RGx00U 1-5, BC25 1-3),
# and 2 on the generic manual (whose AT+QISTATE has no read form: stale sockets are listed per context).
CONTEXT = {"bg95": 1, "generic": 2, "bc25": 3, "bg96": 1, "rg500u": 5}
LISTEN_TCP, LISTEN_UDP = 2020, 2021
DOMAIN = "echo.test"  # in the emulator's hosts map only: the module resolves it, never the host


# -- the daemon, in-process -----------------------------------------------------------------------
class FamilyDaemon(Daemon):
    """The real Daemon; `before` runs on the emulator's port before the daemon opens it."""

    before = None

    async def _start_emulator(self, nursery: trio.Nursery):
        cfg = await super()._start_emulator(nursery)
        if self.before is not None:
            await self.before(self.emulator)
        return cfg


def daemon_args(family: str, config: Path) -> argparse.Namespace:
    return argparse.Namespace(
        emulate=True, emulate_profile=family, emulate_baud=0, config=str(config), log_level=None
    )


@asynccontextmanager
async def running(family: str, config: Path, before=None, *, serving_timeout: float = 30.0):
    cfg = load_config(config, emulate=True)
    daemon = FamilyDaemon(cfg, daemon_args(family, config))
    daemon.before = before
    ctx = cfg.pdp[0].context_id
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.run)
        with trio.fail_after(serving_timeout):
            while not (hasattr(daemon, "supervisor") and daemon.link.serving(ctx)):
                await trio.sleep(0.01)
        yield daemon
        nursery.cancel_scope.cancel()


def write_config(tmp: Path, family: str, servers: dict[str, int], *, ports: dict[str, int],
                 model: str = "auto", extra: str = "") -> Path:
    """model = "auto", forwards (tcp, udp), [[listen]] (TCP; UDP SERVICE where the family has it),
    SOCKS5 and the control socket."""
    udp_service = get_profile(family).udp_service
    text = f"""
[modem]
model = "{model}"
lock_dir = "{tmp}"
[pdp]
apn = "internet"
context_id = {CONTEXT.get(family, 1)}
[supervisor]
# the flowchart's ACK rule, scaled down: 10 polls 0.1 s apart (5 s x 24 in production)
ack_poll_interval = 0.1
ack_poll_count = 10
[proxy]
linger_seconds = 1.0
[[forward]]
name = "bulk"
listen = "tcp:127.0.0.1:{ports['bulk']}"
remote = "127.0.0.1:{servers['duplex']}"
[[forward]]
name = "echo"
listen = "tcp:127.0.0.1:{ports['echo']}"
remote = "localhost:{servers['echo']}"
[[forward]]
name = "stall"
listen = "tcp:127.0.0.1:{ports['stall']}"
remote = "127.0.0.1:{servers['stall']}"
[[forward]]
name = "dgram"
listen = "udp:127.0.0.1:{ports['dgram']}"
remote = "127.0.0.1:{servers['udp']}"
[[listen]]
name = "tcp-in"
protocol = "tcp"
module_port = {LISTEN_TCP}
target = "tcp:127.0.0.1:{servers['echo']}"
"""
    if udp_service:
        text += f"""[[listen]]
name = "udp-in"
protocol = "udp"
module_port = {LISTEN_UDP}
target = "udp:127.0.0.1:{servers['udp']}"
"""
    text += f"""[socks]
listen = "tcp:127.0.0.1:{ports['socks']}"
[metrics]
listen = ""
[control]
socket = "{tmp}/control.sock"
{extra}
"""
    path = tmp / "modemd.toml"
    path.write_text(text)
    return path


# -- local servers --------------------------------------------------------------------------------
class Duplex:
    """TCP server: sends `data` while it receives exactly len(data) bytes, then closes."""

    def __init__(self, size: int) -> None:
        self.data = payload(size)
        self.received_sha = ""
        self.done = trio.Event()

    async def handler(self, stream: trio.SocketStream, server) -> None:
        got = hashlib.sha256()
        n = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, self.data)
            while n < len(self.data) and (chunk := await stream.receive_some(65536)):
                got.update(chunk)
                n += len(chunk)
        self.received_sha = got.hexdigest() if n == len(self.data) else f"short: {n} bytes"
        self.done.set()


@asynccontextmanager
async def udp_echo():
    """UDP server answering every datagram with its bytes reversed (same size, distinguishable)."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        while True:
            data, peer = await sock.recvfrom(65535)
            await sock.sendto(data[::-1], peer)

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield sock.getsockname()[1]
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def servers(size: int = MB):
    duplex = Duplex(size)
    async with tcp_server(duplex.handler) as bulk, tcp_server(echo_handler) as echo, \
            tcp_server(never_read) as stall, udp_echo() as udp:
        yield {"duplex": bulk.port, "echo": echo.port, "stall": stall.port, "udp": udp}, duplex


async def never_read(stream: trio.SocketStream, server) -> None:
    """A remote that stopped reading: nothing it receives is ever acknowledged past its window."""
    await trio.sleep_forever()


def local_ports() -> dict[str, int]:
    import socket as pysocket

    return {"bulk": free_port(), "echo": free_port(), "stall": free_port(), "socks": free_port(),
            "dgram": free_port(pysocket.SOCK_DGRAM)}


def hostile_payload(size: int) -> bytes:
    """Random bytes with AT result lines and a URC planted every 9973 bytes."""
    data = bytearray(payload(size))
    for offset in range(0, size - len(HOSTILE), 9973):
        data[offset : offset + len(HOSTILE)] = HOSTILE
    return bytes(data)


HOSTILE = b'\r\nSEND FAIL\r\n\r\nOK\r\n+QIURC: "closed",0\r\n+QIURC: "pdpdeact",1\r\n'


# -- clients --------------------------------------------------------------------------------------
async def udp_exchange(port: int, datagrams: list[bytes]) -> list[bytes]:
    """Send the datagrams one by one to 127.0.0.1:port; the answers, one datagram each."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    answers = []
    with sock:
        await sock.connect(("127.0.0.1", port))
        for data in datagrams:
            await sock.send(data)
            with trio.fail_after(10):
                answers.append(await sock.recv(65535))
    return answers


async def socks_connect(port: int, host: str, dport: int) -> tuple[int, trio.SocketStream]:
    """RFC 1928 CONNECT with ATYP 3 (domain name): (reply code, stream)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x05\x01\x00")
    assert await recv_exactly(stream, 2) == b"\x05\x00"
    name = host.encode()
    await stream.send_all(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", dport))
    head = await recv_exactly(stream, 4)
    assert head[:1] == b"\x05", head
    if head[3] == 3:
        size = (await recv_exactly(stream, 1))[0]
    else:
        size = {1: 4, 4: 16}[head[3]]
    await recv_exactly(stream, size + 2)
    return head[1], stream


async def echo_through(stream: trio.SocketStream, data: bytes) -> bytes:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, data)
        with trio.fail_after(30):
            answer = await recv_exactly(stream, len(data))
    return answer


async def module_port(emu, port: int, timeout: float = 10.0) -> int:
    """The real loopback port behind the module's listener at `port`, once the daemon opened it."""
    with trio.fail_after(timeout):
        while True:
            try:
                return emu.module_listen_port(port)
            except LookupError:
                await trio.sleep(0.02)


async def modemctl(daemon, *args: str) -> trio.CompletedProcess:
    return await trio.run_process(
        [PY, "-m", "modemd.modemctl", "--socket", daemon.cfg.control.socket, "--json", *args],
        capture_stdout=True, capture_stderr=True, check=False,
    )


def commands_matching(emu, pattern: str, since: int = 0) -> list[re.Match]:
    rx = re.compile(pattern)
    return [m for c in emu.commands[since:] if (m := rx.fullmatch(c))]


# -- what a previous run left behind ----------------------------------------------------------------
def leftovers(family: str, marks: dict, apn: str = "internet"):
    """Before the daemon opens the port: the context active and a socket open on the highest
    connect_id (a crashed previous run); on BC25 also `viewmode`/`showlength` = 1, which persist in
    NVRAM (§3.15) and would put data on the +QIRD header line if modemd did not force them back.
    The context was activated with `apn` (the config's: a previous run of the same config)."""
    profile = get_profile(family)
    ctx = CONTEXT[family]
    stale = max(profile.connect_ids)

    async def before(emu) -> None:
        port = SerialPort.open(emu.tty_path, 115200, lock_dir=None)
        try:
            channel = AtChannel(port)
            async with trio.open_nursery() as nursery:
                await nursery.start(channel.run)
                at = QuectelAt(channel, profile)
                await wait_answering(at)
                if family == "bc25":
                    await at.run('AT+QICFG="viewmode",1', prefix="+QICFG:")
                    await at.run('AT+QICFG="showlength",1', prefix="+QICFG:")
                    await at.run(f"AT+CGACT=1,{ctx}")
                else:
                    await at.qicsgp(ctx, apn)
                    await at.run(f"AT+QIACT={ctx}")
                await at.qiopen_and_wait(ctx, stale, "UDP", "127.0.0.1", 9)
                nursery.cancel_scope.cancel()
        finally:
            port.close()
        assert emu.socket_info(stale) is not None
        marks["stale"] = stale
        marks["since"] = len(emu.commands)

    return before


# -- the families, end to end -----------------------------------------------------------------------
# [proxy] keepalive_seconds (120 s by default) in each family's command and unit (seeds-comparison
# §3.15, §3.18, trap 30): minutes on BG95, seconds on RGx00U and BC25; BG96 and UC-class have none
KEEPALIVE = {
    "bg95": 'AT+QICFG="tcp/keepalive",1,2,25,3',
    "rg500u": 'AT+QICFG="tcp/keepalive",1,120,25,3',
    "bc25": "AT+QIKALIVE=1,120,10,9",
    "bg96": None,
    "generic": None,
}


@pytest.mark.parametrize("family", FAMILIES)
async def test_start_up_and_data_paths(tmp_path, family):
    profile = get_profile(family)
    ctx = CONTEXT[family]
    marks: dict = {}
    async with servers() as (srv, duplex):
        ports = local_ports()
        config = write_config(tmp_path, family, srv, ports=ports)
        async with running(family, config, leftovers(family, marks)) as daemon:
            emu = daemon.emulator
            since = marks["since"]
            # model = "auto": the module named itself (AT+CGMM) and the family's profile is in use
            assert daemon.link.profile is profile
            assert daemon.supervisor.profile is profile
            assert daemon.link.identity["model"]
            # start-up: the stale socket was found by AT+QISTATE (8 fields on BC25, per context on
            # the generic manual) and closed before the daemon opened its first socket
            stale = marks["stale"]
            await module_port(emu, LISTEN_TCP)  # the [[listen]] opens once the context is up
            sent = emu.commands[since:]
            closes = [i for i, c in enumerate(sent) if re.fullmatch(rf"AT\+QICLOSE={stale}(,\d+)?", c)]
            opens = [i for i, c in enumerate(sent) if c.startswith("AT+QIOPEN=")]
            assert closes and opens and closes[0] < opens[0], sent
            assert (emu.socket_info(stale) or {}).get("service") != "UDP"
            state_query = f"AT+QISTATE=0,{ctx}" if family == "generic" else "AT+QISTATE?"
            assert state_query in emu.commands[since:]
            # the context a previous run left active is kept (AT+QIACT? / AT+CGACT? first)
            assert ("AT+CGACT?" if family == "bc25" else "AT+QIACT?") in emu.commands[since:]
            activate = f"AT+CGACT=1,{ctx}" if family == "bc25" else f"AT+QIACT={ctx}"
            assert activate not in emu.commands[since:]
            # family settings forced at every start
            if profile.has_qisde:       # BG95, BG96, RGx00U (echo of QISEND data on by default)
                assert "AT+QISDE=0" in sent
            else:                       # the generic manual and BC25 have no AT+QISDE
                assert not any(c.startswith("AT+QISDE") for c in sent)
            for text in profile.init_commands:  # BC25: dataformat/viewmode/showlength (NVRAM)
                assert text in sent
            if family == "bc25":
                assert sent.index('AT+QICFG="viewmode",0') < sent.index(state_query)
            keepalive = [c for c in sent if "keepalive" in c or c.startswith("AT+QIKALIVE")]
            assert keepalive == ([KEEPALIVE[family]] if KEEPALIVE[family] else []), keepalive
            if KEEPALIVE[family]:             # the module took it: its read form says so
                query, prefix = ("AT+QIKALIVE?", "+QIKALIVE:") if family == "bc25" else (
                    'AT+QICFG="tcp/keepalive"', "+QICFG:")
                answer = (await daemon.link.at.run(query, prefix=prefix)).lines
                assert answer and answer[0].endswith(KEEPALIVE[family].split("=", 1)[1]), answer
            if family == "rg500u":      # server sockets need AT+QCFG="nat",1 (RU §2.3.7 note 3)
                assert 'AT+QCFG="nat",1' in sent
            else:
                assert not any(c.startswith('AT+QCFG="nat"') for c in sent)

            # TCP forward: 1 MB each way, SHA-256 on both ends; the upload is full of AT result
            # lines and URCs (if the module echoed QISEND data, as RGx00U does by default, the
            # daemon would read them as results: duplicated chunks, fake URCs)
            client = await trio.open_tcp_stream("127.0.0.1", ports["bulk"])
            up = hostile_payload(MB)
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.send_all, up)
                    down = await recv_all(client)
                await duplex.done.wait()
            await client.aclose()
            assert len(down) == MB and sha(down) == sha(duplex.data)
            assert duplex.received_sha == sha(up)
            sends = [int(m[2]) for m in commands_matching(emu, r"AT\+QISEND=(\d+),(\d+)", since)]
            reads = [int(m[2]) for m in commands_matching(emu, r"AT\+QIRD=(\d+),(\d+)", since)]
            assert max(sends) == profile.max_send     # 512 on BC25, 1460 elsewhere
            assert max(reads) == profile.max_read     # 512 on BC25, 1500 elsewhere
            if profile.read_length_required:          # generic (TCP) and BC25: always a length
                assert not commands_matching(emu, r"AT\+QIRD=\d+", since)
            # QICLOSE: BC25 has no <timeout> parameter (and answers OK, then CLOSE OK)
            closes = commands_matching(emu, r"AT\+QICLOSE=\d+(,\d+)?", since)
            assert closes and all((m[1] is None) == (family == "bc25") for m in closes)
            # ACK polling (AT+QISEND=<id>,0) where the family has it; BC25 has no such query
            ack_polls = [s for s in sends if s == 0]
            assert bool(ack_polls) == profile.has_ack_query
            assert daemon.manager.stats.ack_timeouts == 0

            # UDP forward: one datagram in, one datagram out, boundaries kept
            sizes = [1, 100, 511, profile.max_send]
            datagrams = [payload(n) for n in sizes]
            answers = await udp_exchange(ports["dgram"], datagrams)
            assert answers == [d[::-1] for d in datagrams]
            assert daemon.proxy.flows["dgram"].datagrams_up == len(sizes)

            # SOCKS5 CONNECT by domain name: the module resolves it (the emulator's hosts map)
            emu.set_hosts({DOMAIN: "127.0.0.1"})
            rep, stream = await socks_connect(ports["socks"], DOMAIN, srv["echo"])
            assert rep == 0
            data = payload(200_000)
            assert sha(await echo_through(stream, data)) == sha(data)
            await stream.aclose()
            # the family's error numbering maps to the same SOCKS5 replies: refused connection
            # (566, generic 554) -> 5, unknown name (565) -> 4
            rep, stream = await socks_connect(ports["socks"], DOMAIN, free_port())
            await stream.aclose()
            assert rep == 5
            rep, stream = await socks_connect(ports["socks"], "nowhere.test", 80)
            await stream.aclose()
            assert rep == 4
            refused = daemon.manager.stats.open_failed
            assert refused["socket_connect_failed"] == 1 and refused["dns_failed"] == 1

            # [[listen]] TCP: a client of the module's TCP LISTENER reaches the local target
            real = await module_port(emu, LISTEN_TCP)
            async with await trio.open_tcp_stream("127.0.0.1", real) as stream:
                data = payload(100_000)
                assert sha(await echo_through(stream, data)) == sha(data)

            # [[listen]] UDP: a peer of the module's UDP SERVICE gets the target's answer back
            if profile.udp_service:
                real = await module_port(emu, LISTEN_UDP)
                datagrams = [payload(n) for n in (1, 300, 1200)]
                assert await udp_exchange(real, datagrams) == [d[::-1] for d in datagrams]

            # nothing leaks: once the TCP clients are gone, only the listeners and the UDP flow
            # (kept until it is idle for 120 s) hold connect_ids
            expected = sorted(["TCP LISTENER", "UDP"] + ["UDP SERVICE"] * profile.udp_service)
            with trio.fail_after(10):
                while sorted(c["service_type"] for c in daemon.manager.connections()) != expected:
                    await trio.sleep(0.02)
            assert daemon.manager.ids_in_use == len(expected)


@pytest.mark.parametrize("family", FAMILIES)
async def test_context_loss_and_utilities(tmp_path, family, monkeypatch):
    profile = get_profile(family)
    ctx = CONTEXT[family]
    if not profile.has_pdpdeact_urc:
        # BC25/BC32 never say that the network dropped the context: the daemon notices by its
        # periodic AT+CGACT? check (60 s in production, 1 s here)
        monkeypatch.setattr(
            supervisor_module, "Timings", lambda: Timings(pdp_check_interval=1.0)
        )
    # small real-socket buffers: a remote that stops reading stalls the module's send queue soon
    monkeypatch.setattr(emulator_package, "EmulatorConfig", functools.partial(
        emulator_package.EmulatorConfig, tx_buffer=4096, sock_sndbuf=4096, sock_rcvbuf=4096,
    ))
    async with servers(size=1000) as (srv, _):
        ports = local_ports()
        config = write_config(tmp_path, family, srv, ports=ports)
        async with running(family, config) as daemon:
            emu = daemon.emulator
            at = daemon.link.at
            emu.set_hosts({DOMAIN: "127.0.0.1"})
            # the ACK rule: AT+QISEND=<id>,0 polls without progress end a connection whose remote
            # stopped acknowledging (flowchart, §7 item 29); BC25 has no ACK query: the connection
            # stays, its data waiting in the module (SEND FAIL back-off)
            mark = len(emu.commands)
            client = await trio.open_tcp_stream("127.0.0.1", ports["stall"])
            reset = False
            with trio.move_on_after(10 if profile.has_ack_query else 2):
                try:
                    while True:
                        await client.send_all(bytes(65536))
                except trio.BrokenResourceError:
                    reset = True
            await client.aclose()
            flow = daemon.proxy.flows["stall"]
            ack_polls = commands_matching(emu, r"AT\+QISEND=\d+,0", mark)
            if profile.has_ack_query:
                assert reset and flow.resets["ack_timeout"] == 1
                assert daemon.manager.stats.ack_timeouts == 1 and len(ack_polls) >= 10
            else:
                assert not reset and flow.resets == {} and not ack_polls
                assert flow.bytes_up > 0 and daemon.manager.stats.send_fail > 0
            # the context: AT+QIACT on every family but BC25, which has only AT+CGACT (§3.2)
            if profile.has_qiact:
                assert f"AT+QIACT={ctx}" in emu.commands
                assert not any(c.startswith("AT+CGACT=") for c in emu.commands)
            else:
                assert f"AT+CGACT=1,{ctx}" in emu.commands
                assert not any(c.startswith(("AT+QIACT", "AT+QICSGP")) for c in emu.commands)

            # DNS: modemctl resolve -> AT+QIDNSGIP; RGx00U has no QIDNSGIP (§3.14)
            res = await modemctl(daemon, "resolve", DOMAIN)
            if profile.has_qidnsgip:
                assert res.returncode == 0, res.stderr
                assert json.loads(res.stdout)["addresses"] == ["127.0.0.1"]
                res = await modemctl(daemon, "resolve", "nowhere.test")
                assert res.returncode == 1 and b"565 dns_failed" in res.stderr
            else:
                assert res.returncode == 1
                assert res.stderr.decode().strip() == f"modemctl: {family} has no AT+QIDNSGIP"

            # ping: the final line's success code is the family's (0; 2 on generic and BC25, §5.2)
            res = await modemctl(daemon, "ping", "localhost", "-c", "2")
            assert res.returncode == 0, res.stderr
            ping = json.loads(res.stdout)
            assert [r["address"] for r in ping["replies"]] == ["127.0.0.1", "127.0.0.1"]
            assert ping["summary"]["sent"] == 2 and ping["summary"]["received"] == 2
            res = await modemctl(daemon, "ping", "nowhere.test", "-c", "1")
            assert res.returncode == 1 and b"ping failed: 565 dns_failed" in res.stderr
            # a request that times out (per-reply code 569; 1 on generic and BC25) is not the end
            replies, summary = await at.qping(ctx, "192.0.2.1", timeout=1, count=1)
            assert replies == [] and summary is not None
            assert (summary.sent, summary.received, summary.lost) == (1, 0, 1)

            # NTP: AT+QNTP (BC25: AT+QNTTP); RGx00U has none (§3.12)
            if profile.ntp_command is None:
                with pytest.raises(NotImplementedError):
                    await at.qntp(ctx, "localhost")
            else:
                result = await at.qntp(ctx, "localhost")
                assert result.result == 0 and re.fullmatch(r"\d{4}/\d\d/\d\d,.*", result.time)
                assert any(c.startswith(f'{profile.ntp_command}={ctx},"localhost"')
                           for c in emu.commands)

            # error numbering: a second server socket on the listener's module port is refused
            # with the family's code for it: 574 port busy, 573 on BG95 (swapped, §5.1), and on
            # the generic manual 568 "Bind socket failed"
            await module_port(emu, LISTEN_TCP)
            with pytest.raises(OpenError) as refused:
                await daemon.manager.open_server(ctx, "TCP LISTENER", LISTEN_TCP)
            expected = {"bg95": (573, "port_busy"), "generic": (568, "socket_bind_failed")}
            assert (refused.value.code, refused.value.reason) == expected.get(
                family, (574, "port_busy")
            )

            # the network drops the context
            assert sha(await forward_echo(ports["echo"], b"before")) == sha(b"before")
            pdp = daemon.supervisor.pdp
            mark = len(emu.commands)
            t0 = trio.current_time()
            emu.pdp_deactivate(ctx)
            reason = "pdpdeact" if profile.has_pdpdeact_urc else "context_lost"
            with trio.fail_after(20):
                while pdp.cycles[reason] < 1 or not daemon.link.serving(ctx):
                    await trio.sleep(0.01)
            took = trio.current_time() - t0
            assert dict(pdp.cycles) == {reason: 1}
            if profile.has_qiact:   # the manual: the host must execute AT+QIDEACT, then QIACT
                after = emu.commands[mark:]
                assert after.index(f"AT+QIDEACT={ctx}") < after.index(f"AT+QIACT={ctx}")
                assert took < 5
            else:                   # the periodic check saw it: AT+CGACT? then CGACT=0 / =1
                after = emu.commands[mark:]
                assert after.index("AT+CGACT?") < after.index(f"AT+CGACT=0,{ctx}") \
                    < after.index(f"AT+CGACT=1,{ctx}")
                assert took < 5
            # ... and comes back: a forward serves again, the module-side listener is re-opened
            data = payload(50_000)
            assert sha(await forward_echo(ports["echo"], data)) == sha(data)
            real = await module_port(emu, LISTEN_TCP)
            async with await trio.open_tcp_stream("127.0.0.1", real) as stream:
                assert await echo_through(stream, b"listener again") == b"listener again"
            assert daemon.supervisor.schedule.total == 0  # no reboot was needed


async def forward_echo(port: int, data: bytes) -> bytes:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        return await echo_through(stream, data)


# -- identification -------------------------------------------------------------------------------
@pytest.fixture
def unknown_module(monkeypatch):
    """An emulated module that is none of the five families (a BG96 calling itself EG915N)."""
    from modemd.emulator import families

    fake = dataclasses.replace(
        families.BG96, name="eg915n", model="EG915N", revision="EG915NEUAGR03A01M16"
    )
    monkeypatch.setitem(families.FAMILIES, "eg915n", fake)
    return "eg915n"


def minimal_config(tmp: Path, model: str, extra: str = "") -> Path:
    path = tmp / "modemd.toml"
    path.write_text(f"""
[modem]
model = "{model}"
lock_dir = "{tmp}"
[pdp]
apn = "internet"
[metrics]
listen = ""
[control]
socket = ""
{extra}
""")
    return path


async def run_until_error(family: str, config: Path) -> BaseException:
    """Run the daemon until it stops on its own; the first real exception it stopped with."""
    cfg = load_config(config, emulate=True)
    with trio.fail_after(30):
        try:
            await Daemon(cfg, daemon_args(family, config)).run()
        except BaseException as exc:  # noqa: BLE001 - unwrap the nursery's exception groups
            while isinstance(exc, BaseExceptionGroup):
                exc = exc.exceptions[0]
            return exc
    raise AssertionError("the daemon did not stop")


async def test_unknown_module_is_refused_naming_the_families(tmp_path, unknown_module):
    error = await run_until_error(unknown_module, minimal_config(tmp_path, "auto"))
    assert isinstance(error, UserError)
    text = str(error)
    assert "\n" not in text
    assert text.startswith("module identifies as ") and "EG915N" in text
    for name in FAMILIES:
        assert f"{name} (" in text
    assert "set modem.model" in text


async def test_model_named_only_in_ati_is_detected(tmp_path, monkeypatch):
    """AT+CGMM says nothing useful; ATI's revision line names the family."""
    from modemd.emulator import families

    vague = dataclasses.replace(families.BG95, name="vague", model="LTE Module")
    monkeypatch.setitem(families.FAMILIES, "vague", vague)
    async with running("vague", minimal_config(tmp_path, "auto")) as daemon:
        assert daemon.link.identity["model"] == "LTE Module"
        assert daemon.link.profile.name == "bg95"
        assert "ATI" in daemon.emulator.commands


async def test_forced_model_serves_a_module_that_is_not_recognised(tmp_path, unknown_module,
                                                                   caplog):
    async with tcp_server(echo_handler) as echo:
        port = free_port()
        extra = f'[[forward]]\nname = "e"\nlisten = "tcp:127.0.0.1:{port}"\n' \
                f'remote = "127.0.0.1:{echo.port}"\n'
        config = minimal_config(tmp_path, "bg96", extra)
        async with running(unknown_module, config) as daemon:
            assert daemon.link.profile.name == "bg96"
            assert daemon.link.identity["model"] == "EG915N"
            assert await forward_echo(port, b"forced") == b"forced"
    # a forced model that disagrees with a module it does recognise is used, with a warning
    caplog.clear()
    async with running("bg95", minimal_config(tmp_path, "bg96")) as daemon:
        assert daemon.link.profile.name == "bg96"
    assert "modem.model = bg96, but the module identifies as 'BG95-S5' (profile bg95)" in \
        caplog.text


# -- what a family cannot do: refused at start, in one line -------------------------------------------
UDP_LISTEN = '[[listen]]\nname = "udp-in"\nprotocol = "udp"\nmodule_port = 5683\n' \
             'target = "udp:127.0.0.1:5683"\n'
TCP_LISTEN = '[[listen]]\nname = "tcp-in"\nprotocol = "tcp"\nmodule_port = 2222\n' \
             'target = "tcp:127.0.0.1:22"\n'
REFUSED = {
    # case: (emulated family, modem.model, [pdp] keys, tables, the line's reason)
    "bc25_udp_service": (
        "bc25", "auto", "", UDP_LISTEN,
        "listen 'udp-in': bc25 has no UDP SERVICE (the manual: \"not supported now\")",
    ),
    "bc25_tcp_listener_ipv6": (
        "bc25", "auto", 'ip_type = "ipv6"', TCP_LISTEN,
        "listen 'tcp-in': bc25 has no TCP LISTENER on IPv6 (pdp.ip_type = \"ipv6\")",
    ),
    "bc25_ipv4v6": ("bc25", "auto", 'ip_type = "ipv4v6"', "",
                    'pdp.ip_type = "ipv4v6": bc25 supports ipv4, ipv6 only'),
    "bc25_context_4": ("bc25", "auto", "context_id = 4", "",
                       "pdp.context_id = 4: bc25 has contexts 1-3 only"),
    "generic_ipv6": ("generic", "auto", 'ip_type = "ipv6"', "",
                     'pdp.ip_type = "ipv6": generic supports ipv4 only'),
    "rg500u_context_6": ("rg500u", "auto", "context_id = 6", "",
                         "pdp.context_id = 6: rg500u has contexts 1-5 only"),
    "bc25_forced_udp_service": (
        "bc25", "bc25", "", UDP_LISTEN,
        "listen 'udp-in': bc25 has no UDP SERVICE (the manual: \"not supported now\")",
    ),
}


async def test_configuration_the_family_cannot_serve_is_refused_in_one_line(tmp_path):
    """`modemd --emulate` as users run it: exit status 2 and one line naming what to change.
    With model = "auto" the line comes once the module has identified itself."""
    results: dict[str, trio.CompletedProcess] = {}

    async def one(case: str, family: str, model: str, pdp: str, tables: str) -> None:
        tmp = tmp_path / case
        tmp.mkdir()
        path = tmp / "modemd.toml"
        path.write_text(
            f'[modem]\nmodel = "{model}"\nlock_dir = "{tmp}"\n[pdp]\napn = "internet"\n{pdp}\n'
            f'[metrics]\nlisten = ""\n[control]\nsocket = ""\n{tables}'
        )
        with trio.fail_after(30):
            results[case] = await trio.run_process(
                [PY, "-m", "modemd.cli", "--emulate", "--emulate-profile", family,
                 "--config", str(path)],
                capture_stdout=True, capture_stderr=True, check=False,
            )

    async with trio.open_nursery() as nursery:
        for case, (family, model, pdp, tables, _) in REFUSED.items():
            nursery.start_soon(one, case, family, model, pdp, tables)
    for case, (family, model, _, _, reason) in REFUSED.items():
        res = results[case]
        err = res.stderr.decode()
        assert res.returncode == 2, (case, err)
        assert "Traceback" not in err, (case, err)
        last = err.strip().splitlines()[-1]
        title = get_profile(family).title
        if model == "auto":
            start = 'modemd: modem.model = "auto": the module identifies as '
            assert last.startswith(start), (case, last)
            assert f", profile {family} ({title}), which cannot serve this configuration: " \
                f"{reason}; change these settings or the module" in last, (case, last)
            assert b"emulator: " in res.stdout  # it got as far as asking the module
        else:
            assert last == f'modemd: modem.model = "{model}" ({title}), which cannot serve this ' \
                f"configuration: {reason}; change these settings or the module", (case, last)
            assert b"emulator: " not in res.stdout  # refused before anything started


@pytest.mark.parametrize("family, seconds, text", [
    ("bg95", 61, 'AT+QICFG="tcp/keepalive",1,2,25,3'),       # whole minutes, rounded up
    ("bg95", 100_000, 'AT+QICFG="tcp/keepalive",1,120,25,3'),  # clamped to 1-120 min
    ("rg500u", 0.5, 'AT+QICFG="tcp/keepalive",1,1,25,3'),      # seconds, at least 1
    ("rg500u", 0, 'AT+QICFG="tcp/keepalive",0'),               # off
    ("bc25", 36_001, "AT+QIKALIVE=1,36000,10,9"),
    ("bc25", 0, "AT+QIKALIVE=0"),
    ("bg96", 120, None),
    ("generic", 120, None),
])
def test_keepalive_command_in_each_familys_unit_and_range(family, seconds, text):
    from modemd.at.commands import QuectelAt

    assert QuectelAt(None, get_profile(family)).keepalive_command(seconds) == text  # type: ignore[arg-type]


async def test_a_context_left_active_with_another_apn_is_activated_again(tmp_path, caplog):
    """A context found active was activated before modemd configured it: kept when AT+QICSGP
    held the config's settings (the same config's previous run, above), activated again when it
    held others (the APN changed between two runs), so that status never shows an APN as in
    effect that the context does not use."""
    marks: dict = {}
    async with servers() as (srv, duplex):
        config = write_config(tmp_path, "bg96", srv, ports=local_ports())
        async with running("bg96", config, leftovers("bg96", marks, apn="old.apn")) as daemon:
            sent = daemon.emulator.commands[marks["since"]:]
            order = [c for c in sent if c.startswith(("AT+QICSGP=1", "AT+QIDEACT=1", "AT+QIACT=1"))]
            assert order == ["AT+QICSGP=1", 'AT+QICSGP=1,1,"internet","","",0', "AT+QIDEACT=1",
                             "AT+QIACT=1"], order
            keeper = daemon.supervisor.contexts[0]
            assert keeper.in_effect.apn == "internet" and keeper.activations == 1
            assert daemon.link.serving(1)
    assert ("context 1 is active with other settings than pdp (apn; APN 'old.apn'): "
            "activating it again with the configured ones") in caplog.text
