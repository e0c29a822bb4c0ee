"""The radio task in the whole daemon (in-process, on the emulator): Prometheus sees the radio.

Real clients only: curl scrapes /metrics, modemctl asks for the status, a TCP client talks through
a forward to a loopback echo server. Nobody runs `modemctl status` before the metrics are checked:
the values come from the radio task's own polls and the registration URCs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys

import trio

import modemd.supervisor.supervisor as supervisor_module
from modemd.config import load_config
from modemd.daemon import Daemon
from modemd.supervisor.states import State, Timings
from tests.sockets_helpers import echo_handler, free_port, payload, recv_exactly, tcp_server


def config(tmp_path, echo_port: int, fwd_port: int, metrics_port: int):
    path = tmp_path / "modemd.toml"
    path.write_text(f"""
[modem]
model = "bg96"
lock_dir = "{tmp_path}"
[pdp]
apn = "internet"
[[forward]]
name = "echo"
listen = "tcp:127.0.0.1:{fwd_port}"
remote = "127.0.0.1:{echo_port}"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[control]
socket = "{tmp_path}/control.sock"
""")
    return path


def start(path) -> Daemon:
    args = argparse.Namespace(emulate=True, emulate_profile="bg96", emulate_baud=0,
                              config=str(path), log_level=None)
    return Daemon(load_config(path, emulate=True), args)


async def until(predicate, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def scrape(port: int) -> dict[str, float]:
    proc = await trio.run_process(["curl", "-sS", f"http://127.0.0.1:{port}/metrics"],
                                  capture_stdout=True)
    values = {}
    for line in proc.stdout.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def modemctl_status(tmp_path) -> dict:
    proc = await trio.run_process(
        [sys.executable, "-m", "modemd.modemctl", "--socket", f"{tmp_path}/control.sock", "--json",
         "status"], capture_stdout=True)
    return json.loads(proc.stdout)


async def test_metrics_see_the_radio_and_a_registration_loss_keeps_the_connection(tmp_path):
    fwd_port, metrics_port = free_port(), free_port()
    async with tcp_server(echo_handler) as server:
        daemon = start(config(tmp_path, server.port, fwd_port, metrics_port))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.run)
            await until(lambda: hasattr(daemon, "emulator"))
            emu = daemon.emulator  # the network around the module, before it is even up
            emu.set_radio(csq=17, ber=0, rsrp=-101, rsrq=-13, sinr=7.4, operator="Radio Test",
                          act=8)
            await until(lambda: hasattr(daemon, "manager") and daemon.link.serving(1))
            link, sup = daemon.link, daemon.supervisor
            await until(lambda: link.radio.sampled_at is not None)  # the first poll, no modemctl
            m = await scrape(metrics_port)
            assert m["modemd_signal_csq"] == 17 and m["modemd_signal_rssi_dbm"] == -79
            assert m["modemd_signal_rsrp_dbm"] == -101 and m["modemd_signal_rsrq_db"] == -13
            assert m["modemd_signal_sinr_db"] == 7.4       # BG96 QCSQ: 1/5 dB, SINR before RSRQ
            assert m['modemd_registration_state{domain="eps"}'] == 1
            assert m['modemd_registration_state{domain="cs"}'] == 1
            assert m['modemd_network_info{act="LTE-M",operator="Radio Test"}'] == 1
            assert m["modemd_registration_losses_total"] == 0

            async with await trio.open_tcp_stream("127.0.0.1", fwd_port) as client:
                await client.send_all(b"before")
                assert await recv_exactly(client, 6) == b"before"
                lost = link.lost(1)
                emu.lose_registration(2, pdpdeact_after=None)  # the network keeps the context
                await until(lambda: sup.state is State.REGISTRATION_LOST)
                m = await scrape(metrics_port)
                assert m['modemd_supervisor_state{state="registration_lost"}'] == 1
                assert m['modemd_registration_state{domain="eps"}'] == 2
                assert m["modemd_registration_losses_total"] == 1
                status = await modemctl_status(tmp_path)
                assert status["state"] == "registration_lost"
                assert status["registration"]["eps"] == 2 and status["registration_losses"] == 1
                emu.regain_registration()
                await until(lambda: sup.state is State.SERVING)
                await client.send_all(b"after")                  # the same connection
                assert await recv_exactly(client, 5) == b"after"
                assert not lost.is_set()
            assert sup.schedule.total == 0 and not sup.pdp.cycles     # no reboot, no PDP cycle
            status = await modemctl_status(tmp_path)
            assert status["signal"]["rsrp_dbm"] == -101 and status["operator"] == "Radio Test"
            assert status["technology"] == "LTE-M" and status["registration"]["eps"] == 1
            nursery.cancel_scope.cancel()


async def test_radio_polls_share_the_background_lane_and_do_not_starve_data(tmp_path, monkeypatch):
    """A poll every 0.05 s during a bulk echo: both go on (the data intact, the polls complete);
    each radio command took a background turn of the socket scheduler (at most one out at a
    time, beside data commands)."""
    monkeypatch.setattr(supervisor_module, "Timings", lambda: Timings(radio_poll=0.05))
    fwd_port = free_port()
    async with tcp_server(echo_handler) as server:
        daemon = start(config(tmp_path, server.port, fwd_port, free_port()))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.run)
            await until(lambda: hasattr(daemon, "manager") and daemon.link.serving(1))
            radio, scheduler = daemon.link.radio, daemon.manager.scheduler
            grants = []
            turn = scheduler.turn

            def watched(key, *, background=False):
                grants.append((key, background))
                return turn(key, background=background)

            monkeypatch.setattr(scheduler, "turn", watched)
            data = payload(64 * 1024)
            async with await trio.open_tcp_stream("127.0.0.1", fwd_port) as client:
                polls, rounds = radio.polls, 0
                with trio.fail_after(60):
                    while radio.polls < polls + 3 or rounds < 3:  # bulk echo until 3 polls ran
                        async with trio.open_nursery() as inner:
                            inner.start_soon(client.send_all, data)
                            got = await recv_exactly(client, len(data))
                        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
                        rounds += 1
            assert ("radio", True) in grants                # ... in background turns
            assert daemon.supervisor.schedule.total == 0
            nursery.cancel_scope.cancel()


def test_alert_and_metric_names_agree():
    """The alert rules name only metrics the exporter has (no typo silences an alert)."""
    from pathlib import Path

    from modemd.metrics import Metrics
    rules = (Path(__file__).parent.parent / "packaging/prometheus/alerts.yml").read_text()
    names = set(re.findall(r"modemd_[a-z0-9_]+", rules))
    assert {"modemd_registration_state", "modemd_registration_losses_total",
            "modemd_signal_rsrp_dbm"} <= names
    assert names <= Metrics().metric_names()
