"""Several PDP contexts ([[pdp]]): the config (array or single table, unique context_ids,
references from forwards, listens and SOCKS5, DNS servers, IPv6 remotes), the family limits
(check-config and the daemon, one line), and end to end against the emulator: two contexts (1 IPv4,
2 IPv6), a forward on each, SOCKS5 CONNECT to an IPv6 literal on the IPv6 context, and a pdpdeact of
one context while a live connection on the other keeps carrying data."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
import trio

from modemd.capabilities import problems
from modemd.config import ConfigError, parse_config
from modemd.control import ControlError
from modemd.control_handlers import handlers
from modemd.emulator import Emulator, EmulatorConfig
from modemd.profiles import PROFILES
from modemd.proxy.proxy import Proxy
from modemd.reload import Apply, plan
from modemd.sockets.manager import SocketManager
from tests.ports import free_port
from tests.sockets_helpers import echo_handler, recv_exactly, tcp_server
from tests.supervisor_helpers import on_emulator, running
from tests.test_daemon import Daemon
from tests.test_ipv6_daemon import BODY, HOSTS, curl, echo_through, http_handler
from tests.test_readme_snippets import README
from tests.test_readme_snippets import SNIPPET as README_SNIPPET

PY = sys.executable
PORT = '[modem]\nport = ""\n'
TWO = (
    '[[pdp]]\ncontext_id = 1\napn = "internet"\n'
    '[[pdp]]\ncontext_id = 2\napn = "v6.example"\nip_type = "ipv6"\n'
)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(PORT + text, emulate=True)
    return info.value.errors


# -- (a) the config ------------------------------------------------------------------------------------
def test_pdp_array_and_single_table():
    cfg = parse_config(PORT + TWO + '[[forward]]\nname = "a"\nlisten = "tcp:127.0.0.1:9000"\n'
                       'remote = "[2001:db8::1]:443"\ncontext_id = 2\n'
                       '[[forward]]\nname = "b"\nlisten = "tcp:127.0.0.1:9001"\n'
                       'remote = "example.com:80"\n[socks]\n', emulate=True)
    assert cfg.context_ids == (1, 2)
    assert cfg.context(2).ip_type == "ipv6" and cfg.context(3) is None
    fwd_a, fwd_b = cfg.forwards
    assert (fwd_a.remote_host, fwd_a.remote_port, fwd_a.context_id) == ("2001:db8::1", 443, 2)
    assert fwd_a.remote == "[2001:db8::1]:443"
    assert fwd_b.context_id == 1 and cfg.socks.context_id == 1  # the first entry is the default
    single = parse_config(PORT + '[pdp]\ncontext_id = 3\napn = "m2m"\n[socks]\n', emulate=True)
    assert single.context_ids == (3,) and single.socks.context_id == 3
    assert parse_config(PORT, emulate=True).context_ids == (1,)  # absent: context 1, defaults


def test_duplicate_and_missing_contexts():
    assert errors_of(TWO.replace("context_id = 2", "context_id = 1")) == [
        "pdp[1].context_id: context 1 is already configured by pdp[0]"
    ]
    with pytest.raises(ConfigError) as info:
        parse_config("pdp = []\n" + PORT, emulate=True)
    assert info.value.errors == ["pdp: no context configured; give at least one [[pdp]] entry"]


def test_references_must_name_a_configured_context():
    text = TWO + (
        '[[forward]]\nname = "f"\nlisten = "tcp:127.0.0.1:9000"\nremote = "h:1"\ncontext_id = 3\n'
        '[[listen]]\nname = "l"\nmodule_port = 2020\ntarget = "tcp:127.0.0.1:22"\ncontext_id = 4\n'
        "[socks]\ncontext_id = 5\n"
    )
    assert errors_of(text) == [
        f"{key}.context_id: context {n} is never activated: [pdp] configures contexts 1, 2"
        for key, n in (("forward[0]", 3), ("listen[0]", 4), ("socks", 5))
    ]


def test_dns_servers_are_ip_literals():
    cfg = parse_config(PORT + '[pdp]\ndns = ["2001:4860:4860::8888", "8.8.8.8"]\n', emulate=True)
    assert cfg.pdp[0].dns == ("2001:4860:4860::8888", "8.8.8.8")
    assert errors_of('[pdp]\ndns = ["dns.google"]\n') == [
        "pdp.dns: 'dns.google' is not an IP address (a DNS server is written as an IPv4 or IPv6 "
        "literal, no brackets, no port)"
    ]
    assert errors_of('[pdp]\ndns = ["1.1.1.1", "8.8.8.8", "9.9.9.9"]\n') == [
        "pdp.dns: gives a primary and at most a secondary server, got 3"
    ]
    assert errors_of('[pdp]\ndns = "8.8.8.8"\n')[0].startswith("pdp.dns: must be an array")
    assert errors_of('[pdp]\ndns = [1, "8.8.8.8"]\n')[0].endswith(
        "got array [1, '8.8.8.8']")  # the value is shown, as for other arrays


def contexts(n: int, ip_type: str = "ipv4") -> str:
    return "".join(f'[[pdp]]\ncontext_id = {i}\nip_type = "{ip_type}"\n' for i in range(1, n + 1))


@pytest.mark.parametrize(("family", "n", "line"), [
    ("bg95", 4, "pdp: 4 contexts configured, bg95 keeps at most 3 active at a time"),
    ("bg96", 4, "pdp: 4 contexts configured, bg96 keeps at most 3 active at a time"),
    ("generic", 4, "pdp: 4 contexts configured, generic keeps at most 3 active at a time"),
    ("rg500u", 6, "pdp[5].context_id = 6: rg500u has contexts 1-5 only; pdp: 6 contexts "
                  "configured, rg500u keeps at most 5 active at a time"),
    ("bc25", 4, "pdp[3].context_id = 4: bc25 has contexts 1-3 only; pdp: 4 contexts configured, "
                "bc25 keeps at most 3 active at a time"),
])
def test_the_family_limit_is_one_line_in_check_config(tmp_path, family, n, line):
    path = tmp_path / "modemd.toml"
    path.write_text(f'[modem]\nport = ""\nmodel = "{family}"\n' + contexts(n))
    res = subprocess.run([PY, "-m", "modemd.cli", "check-config", "--emulate", str(path)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    title = PROFILES[family].title
    assert res.stderr.splitlines() == [
        f'modem.model = "{family}" ({title}), which cannot serve this configuration: {line}; '
        "change these settings or the module",
        f"{path}: 1 error(s)",
    ]
    path.write_text(f'[modem]\nport = ""\nmodel = "{family}"\n' + contexts(n - 1))
    assert subprocess.run([PY, "-m", "modemd.cli", "check-config", "--emulate", str(path)],
                          capture_output=True, check=False).returncode == 0


def test_what_a_family_cannot_do_per_context():
    cfg = parse_config(PORT + TWO, emulate=True)
    assert problems(cfg, PROFILES["generic"]) == [
        'pdp[1].ip_type = "ipv6": generic supports ipv4 only'
    ]
    assert problems(cfg, PROFILES["bg96"]) == []
    mixed = parse_config(PORT + TWO + 'dns = ["2001:4860:4860::8888", "8.8.8.8"]\n', emulate=True)
    assert problems(mixed, PROFILES["rg500u"]) == [
        "pdp[1].dns: rg500u takes both DNS servers of one IP version (both IPv4 or both IPv6)"
    ]
    assert problems(mixed, PROFILES["bc25"]) == [  # one pair of servers for the whole module
        "pdp.dns: bc25 has one pair of DNS servers for every context; give the same dns on each "
        "[[pdp]]"
    ]
    tcp_in = ('[[listen]]\nname = "in"\nmodule_port = 2020\ntarget = "tcp:127.0.0.1:22"\n'
              "context_id = 2\n")
    assert problems(parse_config(PORT + TWO + tcp_in, emulate=True), PROFILES["bc25"]) == [
        "listen 'in': bc25 has no TCP LISTENER on IPv6 (pdp[1].ip_type = \"ipv6\")"
    ]


def test_reload_applies_per_context_keys_and_restarts_for_added_contexts():
    old = parse_config(PORT + TWO, emulate=True)
    new = parse_config(PORT + TWO.replace('"v6.example"', '"v6.other"'), emulate=True)
    p = plan(old, new)
    assert p.paths(Apply.PDP) == ["pdp[1].apn"] and p.refused == []
    third = parse_config(PORT + TWO + "[[pdp]]\ncontext_id = 3\n", emulate=True)
    assert plan(old, third).refused == [
        "pdp[2] cannot change while running (each context gets its keeper at start): restart "
        "modemd (systemctl restart modemd)"
    ]


async def test_auto_model_stops_the_daemon_with_the_limit_line(tmp_path):
    """model = "auto": the same check runs once the module has identified itself."""
    path = tmp_path / "modemd.toml"
    path.write_text(f'[modem]\nlock_dir = "{tmp_path}"\n{contexts(4)}'
                    '[metrics]\nlisten = ""\n[control]\nsocket = ""\n')
    with trio.fail_after(60):
        res = await trio.run_process(
            [PY, "-m", "modemd.cli", "--emulate", "--emulate-profile", "bg96", "--config",
             str(path)], capture_stdout=True, capture_stderr=True, check=False,
        )
    err = res.stderr.decode()
    assert res.returncode == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith('modemd: modem.model = "auto": the module identifies as ')
    assert last.endswith("which cannot serve this configuration: pdp: 4 contexts configured, bg96 "
                         "keeps at most 3 active at a time; change these settings or the module")


# -- (b) end to end --------------------------------------------------------------------------------------
@asynccontextmanager
async def two_context_stack(family: str, toml: str):
    """Emulator + Supervisor + SocketManager + Proxy with [[pdp]] 1 (IPv4) and 2 (IPv6), serving."""
    emu_cfg = EmulatorConfig(family=family, hosts=HOSTS, baud=0, turnaround=0.0,
                             boot_delay=0.01, qiact_delay=0.01)
    async with Emulator.open(emu_cfg) as emu:
        dns = 'dns = ["2001:4860:4860::8888", "2001:4860:4860::8844"]\n'
        pdp = TWO + dns  # context 2's; BC25 has one pair for the module: the same on both
        if family == "generic":  # IPv4 only: two IPv4 contexts
            pdp = TWO.replace('ip_type = "ipv6"', 'ip_type = "ipv4"') + 'dns = ["8.8.8.8"]\n'
        if family == "bc25":
            pdp = pdp.replace('apn = "internet"\n', f'apn = "internet"\n{dns}')
        cfg = parse_config(PORT + pdp + toml, emulate=True)
        assert problems(cfg, PROFILES[family]) == []
        cfg = on_emulator(cfg, emu.tty_path, family)
        async with running(cfg) as (sup, link), trio.open_nursery() as nursery:
            with trio.fail_after(60):
                await link.wait_serving(1)
                await link.wait_serving(2)
            manager = SocketManager(link, cfg.proxy, cfg.supervisor)
            manager.context_ids = set(cfg.context_ids)
            await nursery.start(manager.run)
            proxy = Proxy(cfg, manager)
            await nursery.start(proxy.run)
            yield emu, sup, link, proxy
            nursery.cancel_scope.cancel()


FAMILIES = ["bg95", "bg96", "rg500u", "bc25"]


@pytest.mark.parametrize("family", FAMILIES)
async def test_two_contexts_a_forward_on_each_and_socks_on_ipv6(family):
    ports = {"v4": free_port(), "v6": free_port(), "socks": free_port()}
    async with tcp_server(echo_handler, host="127.0.0.1") as echo4, \
            tcp_server(echo_handler, host="::1") as echo6, \
            tcp_server(http_handler, host="::1") as web:
        toml = (
            f'[[forward]]\nname = "v4"\nlisten = "tcp:127.0.0.1:{ports["v4"]}"\n'
            f'remote = "127.0.0.1:{echo4.port}"\n'
            f'[[forward]]\nname = "v6"\nlisten = "tcp:127.0.0.1:{ports["v6"]}"\n'
            f'remote = "[::1]:{echo6.port}"\ncontext_id = 2\n'
            f'[socks]\nlisten = "tcp:127.0.0.1:{ports["socks"]}"\ncontext_id = 2\n'
        )
        async with two_context_stack(family, toml) as (emu, sup, link, proxy):
            for context_id, version in ((1, 4), (2, 6)):
                addresses = link.context(context_id).addresses
                assert {ipaddress.ip_address(a).version for a in addresses} == {version}
            data = bytes(range(256)) * 8
            assert await echo_through(ports["v4"], data) == data
            assert await echo_through(ports["v6"], data) == data
            assert await curl("--socks5", f"127.0.0.1:{ports['socks']}",
                              f"http://[::1]:{web.port}/") == BODY
            opens = [c for c in emu.commands if c.startswith("AT+QIOPEN=")]
            assert any(c.startswith("AT+QIOPEN=1,") and "127.0.0.1" in c for c in opens)
            v6_opens = [c for c in opens if '"::1"' in c]
            assert len(v6_opens) == 2 and all(c.startswith("AT+QIOPEN=2,") for c in v6_opens)
            dns = '"2001:4860:4860::8888","2001:4860:4860::8844"'
            assert (f"AT+QIDNSCFG={dns}" if family == "bc25" else f"AT+QIDNSCFG=2,{dns}") \
                in emu.commands
            assert [k.activations for k in sup.contexts] == [1, 1]


@pytest.mark.parametrize("family", [*FAMILIES, "generic"])
async def test_pdpdeact_of_one_context_leaves_the_other_connection_alone(family, mock_clock):
    """The network drops context 2 (a pdpdeact URC, or on BC25 the next AT+QIACT? check: 60 s,
    virtual) while a connection on context 1 carries data; context 2 comes back by the flowchart.
    (generic: two IPv4 contexts.)"""
    ports = {"v4": free_port(), "v6": free_port()}
    host2 = "127.0.0.1" if family == "generic" else "::1"
    async with tcp_server(echo_handler, host="127.0.0.1") as echo4, \
            tcp_server(echo_handler, host=host2) as echo6:
        remote2 = f"{host2}:{echo6.port}" if family == "generic" else f"[::1]:{echo6.port}"
        toml = (
            f'[[forward]]\nname = "v4"\nlisten = "tcp:127.0.0.1:{ports["v4"]}"\n'
            f'remote = "127.0.0.1:{echo4.port}"\n'
            f'[[forward]]\nname = "v6"\nlisten = "tcp:127.0.0.1:{ports["v6"]}"\n'
            f'remote = "{remote2}"\ncontext_id = 2\n'
        )
        async with two_context_stack(family, toml) as (emu, sup, link, proxy):
            keeper1, keeper2 = sup.contexts
            if PROFILES[family].qistate_by_context:  # stale sockets looked for on both contexts
                assert {"AT+QISTATE=0,1", "AT+QISTATE=0,2"} <= set(emu.commands)
            async with await trio.open_tcp_stream("127.0.0.1", ports["v4"]) as live:
                await live.send_all(b"before")
                assert await recv_exactly(live, 6) == b"before"
                lost1, lost2 = link.lost(1), link.lost(2)
                emu.pdp_deactivate(2)
                with trio.fail_after(600):
                    await lost2.wait()
                    await link.wait_serving(2)  # QIDEACT, QIACT: up again
                await live.send_all(b"after the other context came back")
                assert await recv_exactly(live, 33) == b"after the other context came back"
            assert not lost1.is_set() and link.serving(1)
            assert keeper1.activations == 1 and not keeper1.cycles and keeper2.activations == 2
            expected = "pdpdeact" if family != "bc25" else "context_lost"
            assert dict(keeper2.cycles) == {expected: 1}
            assert sup.schedule.total == 0  # no reboot
            assert await echo_through(ports["v6"], b"six again") == b"six again"


# -- the daemon as users run it: status, metrics, reload per context ----------------------------------
def test_readme_contexts_snippet_passes_check_config(tmp_path):
    found = dict((name, text) for name, _, text in README_SNIPPET.findall(README.read_text()))
    path = tmp_path / "modemd.toml"
    path.write_text('[modem]\nport = ""\nmodel = "bg96"\n' + found["config-contexts"])
    res = subprocess.run([PY, "-m", "modemd.cli", "check-config", "--emulate", str(path)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout.strip() == f"{path}: OK", res.stderr


def test_status_and_metrics_list_every_context_and_reload_cycles_only_its_own(tmp_path):
    metrics = free_port()
    cfg = tmp_path / "modemd.toml"
    text = (f'[modem]\nmodel = "bg96"\nlock_dir = "{tmp_path}"\n' + TWO
            + f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n'
            f'[control]\nsocket = "{tmp_path}/control.sock"\n')
    cfg.write_text(text)
    daemon = Daemon(tmp_path, cfg)
    try:
        status = daemon.wait_serving()
        assert [(c["context_id"], c["up"], c["ip_type"], c["apn"], c["activations"])
                for c in status["contexts"]] == [
            (1, True, "ipv4", "internet", 1), (2, True, "ipv6", "v6.example", 1)]
        assert status["pdp"] == status["contexts"][0]  # the JSON's `pdp`: the default context
        v6 = status["contexts"][1]["addresses"]
        assert v6 and all(ipaddress.ip_address(a).version == 6 for a in v6)
        lines = [line for line in daemon.ctl("status").stdout.splitlines()
                 if line.startswith("IP:")]
        assert len(lines) == 2 and "(context 1, ipv4, APN internet)" in lines[0]
        assert "(context 2, ipv6, APN v6.example)" in lines[1] and v6[0] in lines[1]
        body = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{metrics}/metrics"],
                              capture_output=True, text=True, timeout=30, check=True).stdout
        for context_id in ("1", "2"):
            assert f'modemd_pdp_up{{context_id="{context_id}"}} 1.0' in body
            assert f'modemd_pdp_activations_total{{context_id="{context_id}"}} 1.0' in body
            info = [line for line in body.splitlines() if line.startswith("modemd_pdp_address_info")
                    and f'context_id="{context_id}"' in line]
            wanted = status["contexts"][int(context_id) - 1]["address"]
            assert len(info) == 1 and f'address="{wanted}"' in info[0], info
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], input=body, text=True,
                                   capture_output=True, check=False)
            assert check.returncode == 0, check.stdout + check.stderr
        # a reload that changes context 2's APN re-cycles context 2 only
        cfg.write_text(text.replace('"v6.example"', '"v6.other"'))
        assert daemon.ctl("reload").returncode == 0
        deadline = time.monotonic() + 30
        while True:
            contexts = json.loads(daemon.ctl("--json", "status").stdout)["contexts"]
            if contexts[1]["apn"] == "v6.other" and contexts[1]["up"]:
                break
            assert time.monotonic() < deadline, contexts
            time.sleep(0.1)  # polling the daemon's status, as a user would
        assert [c["activations"] for c in contexts] == [1, 2]
        assert "cycling context 2: reload: pdp[1].apn changed; 0 connections on it reset" \
            in daemon.output()
        assert "cycling context 1" not in daemon.output()
    finally:
        daemon.stop()
        daemon.log.close()


async def test_modemctl_ping_and_resolve_go_through_the_context_asked_for():
    """`modemctl ping|resolve --context ID`: the control handlers send AT+QPING / AT+QIDNSGIP
    with that context_id (without it: the first configured, as forwards and SOCKS5 do); a
    context the config does not activate is one line naming the configured ones."""
    async with two_context_stack("bg96", "") as (emu, sup, link, proxy):
        daemon = SimpleNamespace(cfg=parse_config(PORT + TWO, emulate=True), link=link)
        control = handlers(daemon)
        with trio.fail_after(30):
            pinged = await control["ping"]({"host": "::1", "count": 1, "context_id": 2}, None)
            resolved = await control["resolve"]({"host": "localhost"}, None)
        assert pinged["context_id"] == 2 and pinged["replies"][0]["address"] == "::1"
        assert resolved["context_id"] == 1 and resolved["addresses"]
        assert [c for c in emu.commands if c.startswith(("AT+QPING=", "AT+QIDNSGIP="))] == [
            'AT+QPING=2,"::1",4,1', 'AT+QIDNSGIP=1,"localhost"']
        for bad in (3, "2", True):
            with pytest.raises(ControlError) as info:
                await control["resolve"]({"host": "localhost", "context_id": bad}, None)
            assert str(info.value) == (f"context {bad} is not configured: modemd activates "
                                       "context(s) 1, 2 ([[pdp]] context_id)")


@pytest.mark.parametrize("family", ["bg96", "bc25", "rg500u"])
async def test_modemctl_ntp_asks_the_module_through_the_context_asked_for(family):
    """`modemctl ntp`: AT+QNTP (BC25: AT+QNTTP) on the context asked for, its answer as UTC; an
    unknown server is the module's error code in one line; RG500U has no NTP command (§3.12)."""
    async with two_context_stack(family, "") as (emu, sup, link, proxy):
        daemon = SimpleNamespace(cfg=parse_config(PORT + TWO, emulate=True), link=link)
        control = handlers(daemon)
        command = PROFILES[family].ntp_command
        if command is None:
            with pytest.raises(ControlError) as info:
                await control["ntp"]({"host": "localhost"}, None)
            assert str(info.value) == f"{PROFILES[family].name} has no NTP command"
            return
        with trio.fail_after(30):
            answer = await control["ntp"]({"host": "localhost", "context_id": 2}, None)
            with pytest.raises(ControlError) as info:
                await control["ntp"]({"host": "no.such.host", "port": 1123}, None)
        assert answer["context_id"] == 2 and answer["server"] == "localhost"
        assert abs(answer["unix"] - time.time()) < 60  # the emulator's clock is this machine's
        assert answer["utc"].endswith("Z") and answer["zone_minutes"] == 0
        assert str(info.value) == "no.such.host: NTP failed: 565 dns_failed"
        assert [c for c in emu.commands if c.startswith(command)] == [
            f'{command}=2,"localhost",123', f'{command}=1,"no.such.host",1123']
        for bad in (0, 65536, "123", True):
            with pytest.raises(ControlError) as info:
                await control["ntp"]({"port": bad}, None)
            assert str(info.value) == f"port {bad}: give a port number from 1 to 65535"
