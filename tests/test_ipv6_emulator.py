"""IPv6 and several contexts through the daemon's AT helpers against the emulator on a real pty:
IPv6 / IPv4v6 contexts per family, sockets to ::1, module listeners on IPv6 contexts, BC25's
<protocol_type> on the wire, AT+QIDNSCFG per context, the active-context limits, and a pdpdeact
that takes only its own context's sockets."""

from __future__ import annotations

import socket as pysocket

import pytest
import trio

from modemd.at.channel import AtCommandError
from modemd.at.commands import OpenFailed, ip_version
from modemd.at.urc import Incoming, OpenResult, Recv
from tests.conftest import open_stack
from tests.sockets_helpers import echo_handler, tcp_server

HOSTS = {"v6.test": "::1", "v4.test": "127.0.0.1"}
PDP_TYPE = {"ipv4": "IP", "ipv6": "IPV6", "ipv4v6": "IPV4V6"}


async def activate(at, context_id: int, ip_type: str) -> tuple[str, ...]:
    """Configure and activate a context as the supervisor does; its addresses."""
    if at.profile.has_qicsgp:
        await at.qicsgp(context_id, "internet", ip_type=ip_type)
        await at.qiact(context_id)
        return next(c.addresses for c in await at.qiact_query() if c.context_id == context_id)
    await at.run(f'AT+CGDCONT={context_id},"{PDP_TYPE[ip_type]}","internet"')
    await at.run(f"AT+CGACT=1,{context_id}", timeout=10)
    rows = await at.query(f"AT+CGPADDR={context_id}", "+CGPADDR:")
    return tuple(rows[0][1:])


async def next_urc(urcs, kind, connect_id: int | None = None):
    with trio.fail_after(10):
        async for urc in urcs:
            if isinstance(urc, kind) and (connect_id is None or urc.connect_id == connect_id):
                return urc
    raise AssertionError("subscription ended")


async def echo_once(at, urcs, connect_id: int, data: bytes) -> bytes:
    """QISEND to an echo server, then read the echo back (buffer access mode)."""
    assert await at.qisend(connect_id, data)
    got = b""
    while len(got) < len(data):
        await next_urc(urcs, Recv, connect_id)
        while chunk := (await at.qird(connect_id)).data:
            got += chunk
    return got


CASES = [("bg95", "ipv6"), ("bg95", "ipv4v6"), ("bg96", "ipv6"), ("bg96", "ipv4v6"),
         ("rg500u", "ipv6"), ("rg500u", "ipv4v6"), ("bc25", "ipv6")]


@pytest.mark.parametrize(("family", "ip_type"), CASES)
async def test_ipv6_context_reaches_an_ipv6_remote(family, ip_type):
    async with open_stack(family, hosts=HOSTS) as stack, \
            tcp_server(echo_handler, host="::1") as server, tcp_server(echo_handler) as v4:
        at = stack.at
        addresses = await activate(at, 1, ip_type)
        versions = sorted(ip_version(a) for a in addresses)
        if family == "rg500u" and ip_type == "ipv4v6":
            assert versions == [4, 6]  # both addresses (RU §2.3.3, line-shapes D3)
        elif ip_type == "ipv6":
            assert versions == [6]
        ipv6_context = ip_type == "ipv6"
        with stack.channel.subscribe() as urcs:
            for cid, host in ((0, "::1"), (1, "v6.test")):
                await at.qiopen_and_wait(1, cid, "TCP", host, server.port, ipv6_context=ipv6_context)
                assert await echo_once(at, urcs, cid, b"over six") == b"over six"
        states = {s.connect_id: s for s in await at.qistate((1,))}
        assert states[0].address == "::1" and states[0].state == "connected"
        # an IPv4 remote on an IPv6-only context has no route (the emulator has no NAT64)
        if ipv6_context:
            with pytest.raises(OpenFailed) as failed:
                await at.qiopen_and_wait(1, 2, "TCP", "127.0.0.1", v4.port,
                                         ipv6_context=ipv6_context)
            assert at.profile.error_name(failed.value.code) == "socket_connect_failed"
        else:
            await at.qiopen_and_wait(1, 2, "TCP", "127.0.0.1", v4.port)


async def test_ipv4_context_refuses_an_ipv6_remote():
    async with open_stack("bg96", hosts=HOSTS) as stack, tcp_server(echo_handler, host="::1") as s:
        assert [ip_version(a) for a in await activate(stack.at, 1, "ipv4")] == [4]
        with pytest.raises(OpenFailed):
            await stack.at.qiopen_and_wait(1, 0, "TCP", "v6.test", s.port)


async def test_generic_family_has_ipv4_contexts_only():
    async with open_stack("generic") as stack:
        with pytest.raises(AtCommandError):
            await stack.at.qicsgp(1, "internet", ip_type="ipv6")
        await stack.at.qicsgp(1, "internet", ip_type="ipv4")


async def test_bc25_protocol_type_on_the_wire():
    async with open_stack("bc25", hosts=HOSTS) as stack, \
            tcp_server(echo_handler, host="::1") as v6, tcp_server(echo_handler) as v4:
        at, emu = stack.at, stack.emulator
        await activate(at, 1, "ipv6")
        await at.qiopen_and_wait(1, 0, "TCP", "::1", v6.port)
        await at.qiopen_and_wait(1, 1, "TCP", "v6.test", v6.port, ipv6_context=True)
        opens = [c for c in emu.commands if c.startswith("AT+QIOPEN=")]
        assert opens == [f'AT+QIOPEN=1,0,"TCP","::1",{v6.port},0,0,1',
                         f'AT+QIOPEN=1,1,"TCP","v6.test",{v6.port},0,0,1']
        # without <protocol_type> (0: IPv4) the module does not open an IPv6 remote
        with stack.channel.subscribe() as urcs:
            await at.run(f'AT+QIOPEN=1,2,"TCP","::1",{v6.port},0,0')
            result = await next_urc(urcs, OpenResult, 2)
        assert result.connect_id == 2 and at.profile.error_name(result.result) != "ok"
        # and the IPv6 context has no IPv4
        with pytest.raises(OpenFailed):
            await at.qiopen_and_wait(1, 3, "TCP", "127.0.0.1", v4.port)
        assert emu.commands[-1].endswith(",0")


async def test_bc25_refuses_a_tcp_listener_on_ipv6():
    async with open_stack("bc25") as stack:
        await activate(stack.at, 1, "ipv6")
        with pytest.raises(AtCommandError):
            await stack.at.qiopen(1, 0, "TCP LISTENER", stack.at.listen_address(True), 0, 2020,
                                  ipv6_context=True)


@pytest.mark.parametrize("family", ["bg95", "rg500u"])
async def test_module_listener_and_udp_service_on_an_ipv6_context(family):
    async with open_stack(family) as stack:
        at, emu = stack.at, stack.emulator
        (own,) = await activate(at, 1, "ipv6")
        local = at.listen_address(True)
        with stack.channel.subscribe() as urcs:
            await at.qiopen_and_wait(1, 0, "TCP LISTENER", local, 0, 2020, ipv6_context=True)
            await at.qiopen_and_wait(1, 1, "UDP SERVICE", local, 0, 5683, ipv6_context=True)
            assert f'"{local}"' in emu.commands[-1]
            states = {s.connect_id: s for s in await at.qistate((1,))}
            # the module prints its own IPv6 address for its servers (S5 §3.7.1, §3.9.1)
            assert states[0].address == own and states[0].state == "listening"
            assert states[1].address == own and states[1].local_port == 5683

            client = trio.socket.socket(pysocket.AF_INET6)
            await client.connect(("::1", emu.module_listen_port(2020)))
            incoming = await next_urc(urcs, Incoming)
            assert incoming.server_id == 0 and incoming.remote_ip == "::1"
            assert incoming.remote_port == client.getsockname()[1]
            await client.send(b"hi")
            await next_urc(urcs, Recv, incoming.connect_id)
            assert (await at.qird(incoming.connect_id)).data == b"hi"
            client.close()

            peer = trio.socket.socket(pysocket.AF_INET6, pysocket.SOCK_DGRAM)
            await peer.bind(("::1", 0))
            await peer.sendto(b"datagram", ("::1", emu.module_listen_port(5683)))
            await next_urc(urcs, Recv, 1)
            read = await at.qird(1)
            assert read.data == b"datagram" and read.remote == ("::1", peer.getsockname()[1])
            assert await at.qisend(1, b"answer", read.remote)
            with trio.fail_after(10):
                assert await peer.recv(100) == b"answer"
            peer.close()


async def test_listener_at_the_ipv4_address_fails_on_an_ipv6_context():
    async with open_stack("bg96") as stack:
        await activate(stack.at, 1, "ipv6")
        with pytest.raises(OpenFailed):
            await stack.at.qiopen_and_wait(1, 0, "TCP LISTENER", "127.0.0.1", 0, 2020)


async def test_ping_an_ipv6_host():
    async with open_stack("bg95", hosts=HOSTS) as stack:
        await activate(stack.at, 1, "ipv6")
        replies, summary = await stack.at.qping(1, "v6.test", count=2)
        assert [r.address for r in replies] == ["::1", "::1"]
        assert summary is not None and summary.received == 2


@pytest.mark.parametrize("family", ["bg96", "rg500u", "bc25"])
async def test_active_context_limit(family):
    async with open_stack(family) as stack:
        at = stack.at
        limit = at.profile.max_active_contexts
        ids = list(at.profile.context_ids)
        for cid in ids[:limit]:
            await activate(at, cid, "ipv4")
        if len(ids) > limit:  # one too many is refused; freeing one makes room
            with pytest.raises(AtCommandError):
                await activate(at, ids[limit], "ipv4")
            await at.qideact(ids[0])
            await activate(at, ids[limit], "ipv4")
        else:  # BC25: the range is the limit
            with pytest.raises(ValueError):
                await at.qiact(ids[-1] + 1)


async def test_pdpdeact_of_one_context_leaves_the_other():
    async with open_stack("bg95", hosts=HOSTS) as stack, \
            tcp_server(echo_handler) as v4, tcp_server(echo_handler, host="::1") as v6:
        at, emu = stack.at, stack.emulator
        await activate(at, 1, "ipv4")
        await activate(at, 2, "ipv6")
        with stack.channel.subscribe() as urcs:
            await at.qiopen_and_wait(1, 0, "TCP", "127.0.0.1", v4.port)
            await at.qiopen_and_wait(2, 1, "TCP", "::1", v6.port, ipv6_context=True)
            emu.pdp_deactivate(1)
            with trio.fail_after(10):
                async for urc in urcs:
                    if getattr(urc, "context_id", None) == 1:
                        break
            states = {s.connect_id: s for s in await at.qistate()}
            assert states[1].state == "connected" and states[1].context_id == 2
            assert states[0].state != "connected"
            assert await echo_once(at, urcs, 1, b"still here") == b"still here"
        active = {c.context_id for c in await at.qiact_query()}
        assert active == {2}


async def test_qidnscfg_per_context():
    async with open_stack("bg95") as stack:
        at = stack.at
        await activate(at, 1, "ipv4")
        await activate(at, 2, "ipv6")
        before2 = await at.qidnscfg_query(2)
        assert ip_version(before2.primary) == 6
        await at.qidnscfg(1, "9.9.9.9", "149.112.112.112")
        await at.qidnscfg(2, "2001:DB8::53")
        one, two = await at.qidnscfg_query(1), await at.qidnscfg_query(2)
        assert (one.context_id, one.primary, one.secondary) == (1, "9.9.9.9", "149.112.112.112")
        assert (two.context_id, two.primary) == (2, "2001:db8::53")
        assert 'AT+QIDNSCFG=2,"2001:db8::53"' in stack.emulator.commands
        with pytest.raises(ValueError, match="not an IP address"):
            await at.qidnscfg(1, 'x",1')


async def test_rg500u_dns_of_the_other_ip_version_is_refused():
    async with open_stack("rg500u") as stack:
        at = stack.at
        await activate(at, 1, "ipv6")
        with pytest.raises(ValueError, match="both DNS servers"):
            await at.qidnscfg(1, "2001:db8::53", "8.8.8.8")
        with pytest.raises(AtCommandError):  # RU §2.3.14: only IPv6 DNS on an IPv6 context
            await at.qidnscfg(1, "8.8.8.8")
        await at.qidnscfg(1, "2001:db8::53", "2001:db8::54")
        assert (await at.qidnscfg_query(1)).secondary == "2001:db8::54"


async def test_bc25_dns_servers_are_the_modules():
    async with open_stack("bc25") as stack:
        at = stack.at
        await at.qidnscfg(2, "2001:db8::53", "9.9.9.9")
        assert stack.emulator.commands[-1] == 'AT+QIDNSCFG="2001:db8::53","9.9.9.9"'
        servers = await at.qidnscfg_query(1)
        assert (servers.context_id, servers.primary, servers.secondary) == (
            None, "2001:db8::53", "9.9.9.9")
