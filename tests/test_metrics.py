"""Metrics registry, the AT Observer hooks, the trio /metrics server, alert rules and the dashboard."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio
import trio.testing

from modemd.at.channel import (
    PROBE_TEXT,
    AtChannel,
    AtCommandError,
    AtTimeout,
    CommandLost,
    Observer,
)
from modemd.at.protocol import Command
from modemd.at.urc import Closed, OtherUrc, PdpDeact, Recv, Registration
from modemd.metrics import (
    AT_DURATION_BUCKETS,
    MAX_COMMANDS,
    SUPERVISOR_STATES,
    Metrics,
    csq_to_dbm,
    label_value,
    result_kind,
    urc_kind,
)
from modemd.metrics_http import handle_request, serve_metrics

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "packaging" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "packaging" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "modemd.json"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool missing (apt-get install -y --no-install-recommends prometheus)",
)


def busy_metrics() -> Metrics:
    """A registry with every labelled series populated, as after some hours of work."""
    m = Metrics()
    m.set_module_info(model="BG96", firmware="BG96MAR02A07M1G", imei="866425030000000")
    m.set_supervisor_state("serving")
    m.set_registration("CEREG", 1)
    m.set_registration("ps", 5)
    m.set_signal(21, rsrp_dbm=-95, rsrq_db=-10.5, sinr_db=12)
    m.declare_context(1)
    m.set_pdp(1, True, "10.64.1.2")
    m.set_last_at_response_age(1.5)
    m.command_done("AT+CSQ", 0.012, "OK")
    m.command_done("AT+QIOPEN", 1.2, "+CME ERROR: 565")
    m.command_done("AT+QISEND", 0.05, "SEND FAIL")
    m.command_timeout("AT+QIACT")
    m.command_lost("AT+QIRD")
    m.module_silent("AT+QIRD", 4.5)
    m.resyncs.inc()
    m.urc(Recv(0))
    m.urc(OtherUrc('+QIND: "csq",20,99'))
    m.unknown_line("garbage")
    m.urc_dropped(Recv(1))
    m.framing_resync()
    m.sync_counter(m.unsolicited_lines, 3, "+QIND")
    m.sync_counter(m.unsolicited_lines, 1, "Call Ready")
    m.sync_counter(m.at_line_end_silences, 2)
    m.declare_forwards(["mqtt", "api"])
    m.connection_opened("mqtt")
    m.forwarded("mqtt", "to_module", 1500)
    m.forwarded("mqtt", "from_module", 300)
    m.connection_closed("mqtt", "remote closed")
    m.connection_failed("api", 565)
    m.connection_failed("api", "timeout")
    m.set_connect_ids(3, 9)
    m.send_fail()
    m.set_unacked(2, 512)
    m.reconcile_recovery()
    m.set_queued_connections(1)
    m.pdp_activated(1)
    m.reboot("cfun", "at_timeout")
    m.set_next_reboot(1_900_000_000)
    m.set_reboot_backoff(2)
    m.power_cycle()
    return m


def scrape_text(m: Metrics) -> str:
    body, ctype = m.generate()
    assert ctype.startswith("text/plain; version=0.0.4")
    return body.decode()


# -- the registry -------------------------------------------------------------------------------
def test_every_metric_is_exposed_with_expected_names():
    text = scrape_text(busy_metrics())
    for name in [
        "modemd_module_info", "modemd_supervisor_state", "modemd_registration_state",
        "modemd_signal_rssi_dbm", "modemd_signal_csq", "modemd_signal_rsrp_dbm",
        "modemd_signal_rsrq_db", "modemd_signal_sinr_db", "modemd_pdp_up",
        "modemd_pdp_address_info", "modemd_last_at_response_age_seconds",
        "modemd_at_command_duration_seconds_bucket", "modemd_at_command_timeouts_total",
        "modemd_at_results_total", "modemd_at_urcs_total", "modemd_at_unknown_lines_total",
        "modemd_at_framing_resyncs_total", "modemd_at_urcs_dropped_total",
        "modemd_unsolicited_lines_total", "modemd_at_line_end_silences_total",
        "modemd_forward_bytes_total", "modemd_connections_opened_total",
        "modemd_connections_closed_total", "modemd_connections_failed_total",
        "modemd_connections_active", "modemd_connect_ids_in_use", "modemd_connect_ids_available",
        "modemd_send_fail_total", "modemd_unacked_bytes", "modemd_reconcile_recoveries_total",
        "modemd_pushed_bytes_total", "modemd_access_mode_switches_total",
        "modemd_queued_connections", "modemd_pdp_activations_total", "modemd_reboots_total",
        "modemd_next_reboot_timestamp_seconds", "modemd_consecutive_reboots",
        "modemd_power_cycles_total", "modemd_build_info", "modemd_start_time_seconds",
        "modemd_at_commands_lost_total", "modemd_module_silences_total",
        "modemd_module_resyncs_total",
    ]:
        assert re.search(rf"^{name}[{{ ]", text, re.M), name
    assert 'modemd_module_info{firmware="BG96MAR02A07M1G",imei="866425030000000",model="BG96"} 1.0' in text
    assert 'modemd_pdp_address_info{address="10.64.1.2",context_id="1"} 1.0' in text


def test_command_durations_fall_in_the_buckets_a_prometheus_histogram_would_give():
    """The plain-count collector (metrics.CommandCounts) keeps Histogram's rules: a value equal
    to a bound counts in that bucket, buckets are cumulative, +Inf is the count, and a negative
    time (a clock step) counts as 0."""
    m = Metrics()
    for seconds in (0.001, 0.0011, 0.3, 200.0, -1.0):
        m.command_done("AT+QISEND", seconds, "SEND OK")
    v = m.value
    labels = {"command": "AT+QISEND"}
    assert v("modemd_at_command_duration_seconds_bucket", {**labels, "le": "0.001"}) == 2
    assert v("modemd_at_command_duration_seconds_bucket", {**labels, "le": "0.0025"}) == 3
    assert v("modemd_at_command_duration_seconds_bucket", {**labels, "le": "0.5"}) == 4
    assert v("modemd_at_command_duration_seconds_bucket", {**labels, "le": "150.0"}) == 4
    assert v("modemd_at_command_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 5
    assert v("modemd_at_command_duration_seconds_count", labels) == 5
    assert v("modemd_at_command_duration_seconds_sum", labels) == pytest.approx(200.3021)
    assert v("modemd_at_results_total", {**labels, "result": "send_ok"}) == 5


def test_a_pushed_frame_counts_as_a_recv_urc():
    """The channel's fast lane hands pushed payloads over without a URC object; they still count
    in modemd_at_urcs_total{type="recv"}, with the recv notices of buffer mode."""
    m = Metrics()
    m.pushed(0, 1460)
    m.urc(Recv(1))
    m.pushed(3, 20)
    assert m.value("modemd_at_urcs_total", {"type": "recv"}) == 3


def test_values():
    m = busy_metrics()
    v = m.value
    assert v("modemd_supervisor_state", {"state": "serving"}) == 1
    assert v("modemd_supervisor_state", {"state": "rebooting"}) == 0
    assert v("modemd_registration_state", {"domain": "eps"}) == 1
    assert v("modemd_registration_state", {"domain": "ps"}) == 5
    assert v("modemd_signal_csq") == 21
    assert v("modemd_signal_rssi_dbm") == -71
    assert v("modemd_signal_sinr_db") == 12
    assert v("modemd_at_results_total", {"command": "AT+QIOPEN", "result": "cme_error"}) == 1
    assert v("modemd_at_results_total", {"command": "AT+QISEND", "result": "send_fail"}) == 1
    assert v("modemd_at_command_timeouts_total", {"command": "AT+QIACT"}) == 1
    assert v("modemd_at_command_duration_seconds_count", {"command": "AT+CSQ"}) == 1
    assert v("modemd_at_urcs_total", {"type": "recv"}) == 1
    assert v("modemd_at_urcs_total", {"type": "other"}) == 1
    assert v("modemd_forward_bytes_total", {"forward": "mqtt", "direction": "to_module"}) == 1500
    assert v("modemd_forward_bytes_total", {"forward": "api", "direction": "from_module"}) == 0
    assert v("modemd_connections_active", {"forward": "mqtt"}) == 0
    assert v("modemd_connections_closed_total", {"forward": "mqtt", "reason": "remote_closed"}) == 1
    assert v("modemd_connections_failed_total", {"forward": "api", "code": "565"}) == 1
    assert v("modemd_connections_failed_total", {"forward": "api", "code": "timeout"}) == 1
    assert v("modemd_connections_opened_total", {"forward": "api"}) == 0
    assert v("modemd_unacked_bytes", {"connect_id": "2"}) == 512
    assert v("modemd_reboots_total", {"step": "cfun", "cause": "at_timeout"}) == 1
    assert v("modemd_consecutive_reboots") == 2
    assert v("modemd_next_reboot_timestamp_seconds") == 1_900_000_000


def test_initial_state():
    m = Metrics()
    assert m.value("modemd_supervisor_state", {"state": SUPERVISOR_STATES[0]}) == 1
    assert sum(m.value("modemd_supervisor_state", {"state": s}) for s in SUPERVISOR_STATES) == 1
    assert m.value("modemd_last_at_response_age_seconds") == math.inf
    assert math.isnan(m.value("modemd_signal_csq"))
    assert m.value("modemd_next_reboot_timestamp_seconds") == 0


def test_supervisor_state_is_one_hot_and_accepts_new_states():
    m = Metrics(states=("a", "b"))
    m.set_supervisor_state("b")
    assert [m.value("modemd_supervisor_state", {"state": s}) for s in "ab"] == [0, 1]
    m.set_supervisor_state("brand_new")
    assert [m.value("modemd_supervisor_state", {"state": s}) for s in ("a", "b", "brand_new")] == [0, 0, 1]


def test_states_match_the_supervisor():
    states = pytest.importorskip("modemd.supervisor.states")
    assert set(SUPERVISOR_STATES) == {str(s) for s in states.State}


def test_set_supervisor_state_accepts_enum_members():
    states = pytest.importorskip("modemd.supervisor.states")
    m = Metrics()
    m.set_supervisor_state(states.State.SERVING)
    assert m.value("modemd_supervisor_state", {"state": "serving"}) == 1


def test_signal_unknown_and_explicit_dbm():
    m = Metrics()
    m.set_signal(99)
    assert math.isnan(m.value("modemd_signal_csq")) and math.isnan(m.value("modemd_signal_rssi_dbm"))
    m.set_signal(None, -80)
    assert m.value("modemd_signal_rssi_dbm") == -80
    assert [csq_to_dbm(x) for x in (0, 1, 2, 30, 31, 99, None)] == [-113, -111, -109, -53, -51, None, None]


def test_pdp_address_series_removed_when_down():
    m = Metrics()
    m.set_pdp(1, True, "10.0.0.1")
    m.set_pdp(1, True, "10.0.0.2")
    text = scrape_text(m)
    assert "10.0.0.1" not in text and 'address="10.0.0.2"' in text
    m.set_pdp(1, False)
    assert "modemd_pdp_address_info{" not in scrape_text(m)
    assert m.value("modemd_pdp_up", {"context_id": "1"}) == 0
    m.set_pdp(1, False)  # idempotent


def test_unacked_series_removed():
    m = Metrics()
    m.set_unacked(3, 10)
    m.set_unacked(3, None)
    m.set_unacked(3, None)
    assert m.value("modemd_unacked_bytes", {"connect_id": "3"}) is None


def test_active_connections_never_negative():
    m = Metrics()
    m.connection_closed("x", "reboot")
    assert m.value("modemd_connections_active", {"forward": "x"}) == 0
    m.connection_opened("x")
    m.connection_opened("x")
    m.connection_closed("x", "local_close")
    assert m.value("modemd_connections_active", {"forward": "x"}) == 1
    m.set_connections_active("x", 7)
    m.connection_closed("x", "local_close")
    assert m.value("modemd_connections_active", {"forward": "x"}) == 6


def test_forwarded_direction_checked():
    m = Metrics()
    with pytest.raises(ValueError):
        m.forwarded("x", "up", 1)
    m.forwarded("x", "to_module", 0)  # no-op
    assert m.value("modemd_forward_bytes_total", {"forward": "x", "direction": "to_module"}) is None


def test_command_label_cardinality_is_bounded():
    m = Metrics()
    for i in range(MAX_COMMANDS + 10):
        m.command_done(f"AT+X{i}", 0.01, "OK")
    m.command_done('AT+QPING="evil\ninjection"', 0.01, "OK")
    names = {s.labels["command"] for f in m.registry.collect() if f.name == "modemd_at_results"
             for s in f.samples if s.name.endswith("_total")}
    assert len(names) == MAX_COMMANDS + 1 and "other" in names
    assert m.value("modemd_at_results_total", {"command": "other", "result": "ok"}) == 11


@pytest.mark.parametrize(
    "final,kind",
    [("OK", "ok"), ("ERROR", "error"), ("+CME ERROR: 550", "cme_error"), ("+CMS ERROR: 500", "cms_error"),
     ("SEND OK", "send_ok"), ("SEND FAIL", "send_fail"), ("NO CARRIER", "no_carrier"),
     ("CONNECT", "connect"), ("CONNECT 150", "connect"), ("WHATEVER", "other")],
)
def test_result_kind(final, kind):
    assert result_kind(final) == kind


def test_urc_kind_and_label_value():
    assert urc_kind(Recv(1)) == "recv"
    assert urc_kind(PdpDeact(1)) == "pdp_deact"
    assert urc_kind(Closed(1)) == "closed"
    assert urc_kind(OtherUrc("x")) == "other"
    assert urc_kind(Registration("CREG", 1)) == "registration"
    assert label_value("Remote Closed!") == "remote_closed"
    assert label_value("") == "unknown"
    assert len(label_value("x" * 500)) == 64


def test_registration_urc_is_only_counted_the_state_comes_from_the_radio_publication():
    """The observer counts URCs; modemd_registration_state is mapped from link.radio by the
    provider (one source: URCs and the periodic check alike)."""
    m = Metrics()
    m.urc(Registration("CEREG", 5))
    assert m.value("modemd_at_urcs_total", {"type": "registration"}) == 1
    assert m.value("modemd_registration_state", {"domain": "eps"}) is None
    m.set_registration("CEREG", 5)
    assert m.value("modemd_registration_state", {"domain": "eps"}) == 5
    m.set_registrations({"CGREG": 1, "CEREG": 2})
    assert m.value("modemd_registration_state", {"domain": "eps"}) == 2
    m.set_registrations({})  # the module restarted: nothing known, nothing stale
    assert math.isnan(m.value("modemd_registration_state", {"domain": "ps"}))


def test_providers_run_at_scrape_and_errors_are_counted(caplog):
    m = Metrics()
    calls = []

    def good(metrics: Metrics) -> None:
        calls.append(1)
        metrics.set_connect_ids(len(calls), 12 - len(calls))

    def bad(metrics: Metrics) -> None:
        raise RuntimeError("boom")

    m.add_provider(good)
    m.add_provider(bad)
    text = scrape_text(m)
    assert "modemd_connect_ids_in_use 1.0" in text
    scrape_text(m)
    assert m.value("modemd_connect_ids_in_use") == 2
    assert m.value("modemd_metrics_provider_errors_total") == 2
    assert "boom" in caplog.text
    m.remove_provider(bad)
    scrape_text(m)
    assert m.value("modemd_metrics_provider_errors_total") == 2


def test_sync_counter_follows_cumulative_totals():
    m = Metrics()
    m.sync_counter(m.forward_bytes, 100, "mqtt", "to_module")
    m.sync_counter(m.forward_bytes, 250, "mqtt", "to_module")
    assert m.value("modemd_forward_bytes_total", {"forward": "mqtt", "direction": "to_module"}) == 250
    m.sync_counter(m.forward_bytes, 250, "mqtt", "to_module")
    m.sync_counter(m.forward_bytes, 40, "mqtt", "to_module")  # source reset: counts from 0
    assert m.value("modemd_forward_bytes_total", {"forward": "mqtt", "direction": "to_module"}) == 290
    m.sync_counter(m.send_fails, 3)
    m.sync_counter(m.send_fails, 5)
    assert m.value("modemd_send_fail_total") == 5
    m.sync_counter(m.reboots, 0, "cfun", "x")  # creates the series at 0
    assert m.value("modemd_reboots_total", {"step": "cfun", "cause": "x"}) == 0


def test_separate_registries():
    a, b = Metrics(), Metrics()
    a.send_fail()
    assert b.value("modemd_send_fail_total") == 0


def test_duration_buckets():
    assert AT_DURATION_BUCKETS[0] == 0.001 and AT_DURATION_BUCKETS[-1] == 150
    assert list(AT_DURATION_BUCKETS) == sorted(AT_DURATION_BUCKETS)


def test_openmetrics_negotiation():
    m = busy_metrics()
    body, ctype = m.generate("application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    assert b"# TYPE modemd_module info" in body


def test_metrics_is_an_observer():
    assert isinstance(Metrics(), Observer)


# -- with the real AT channel ------------------------------------------------------------------
async def test_channel_feeds_observer(autojump_clock):
    m = Metrics()
    ours, module = trio.testing.memory_stream_pair()
    channel = AtChannel(ours, observer=m)

    async def fake_module():
        buf = b""
        while True:
            data = await module.receive_some()
            if not data:
                return
            buf += data
            while b"\r" in buf:
                line, buf = buf.split(b"\r", 1)
                line = line.strip()
                if line == b"AT+CSQ":
                    await module.send_all(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n")
                elif line == b"AT+QIOPEN=1,0":
                    await module.send_all(b"\r\n+CME ERROR: 565\r\n")
                elif line == b"AT+QIACT=1":
                    pass  # never answers
                elif line == b"AT+URC":
                    await module.send_all(
                        b'\r\n+QIURC: "closed",3\r\n\r\n+QIURC: "pdpdeact",1\r\n\r\nHELLO?\r\n\r\nOK\r\n'
                    )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_module)
        await nursery.start(channel.run)
        resp = await channel.command(Command("AT+CSQ", prefix="+CSQ:", timeout=5))
        assert resp.final == "OK"
        with pytest.raises(AtCommandError):
            await channel.command(Command("AT+QIOPEN=1,0", timeout=5))
        with pytest.raises(AtTimeout):
            await channel.command(Command("AT+QIACT=1", timeout=150))
        await channel.command(Command("AT+URC", timeout=5))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()

    v = m.value
    assert v("modemd_at_results_total", {"command": "AT+CSQ", "result": "ok"}) == 1
    assert v("modemd_at_results_total", {"command": "AT+QIOPEN", "result": "cme_error"}) == 1
    assert v("modemd_at_command_timeouts_total", {"command": "AT+QIACT"}) == 1
    assert v("modemd_at_command_duration_seconds_count", {"command": "AT+CSQ"}) == 1
    assert v("modemd_at_urcs_total", {"type": "closed"}) == 1
    assert v("modemd_at_urcs_total", {"type": "pdp_deact"}) == 1
    assert v("modemd_at_unknown_lines_total") == 1


async def test_lost_commands_and_silence_are_counted(autojump_clock):
    """A command lost on the line (the probe is answered) counts in
    modemd_at_commands_lost_total; a module that answers no probe in modemd_module_silences_total."""
    m = Metrics()
    ours, module = trio.testing.memory_stream_pair()
    channel = AtChannel(ours, observer=m)
    mute = trio.Event()

    async def fake_module():
        buf = b""
        while data := await module.receive_some():
            buf += data
            while b"\r" in buf:
                line, buf = buf.split(b"\r", 1)
                if mute.is_set() or line.strip() != PROBE_TEXT.encode():
                    continue  # AT+CSQ is lost on the line; once muted, nothing is answered
                await module.send_all(b"\r\n+CMEE: 1\r\n\r\nOK\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_module)
        await nursery.start(channel.run)
        with pytest.raises(CommandLost):
            await channel.command(Command("AT+CSQ", prefix="+CSQ:", timeout=60, expect=1.5))
        mute.set()
        with pytest.raises(AtTimeout):
            await channel.command(Command("AT+CSQ", prefix="+CSQ:", timeout=60, expect=1.5))
        nursery.cancel_scope.cancel()
    assert m.value("modemd_at_commands_lost_total", {"command": "AT+CSQ"}) == 1
    assert m.value("modemd_module_silences_total") == 1


# -- promtool -----------------------------------------------------------------------------------
def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_scrape():
    for m in (Metrics(), busy_metrics()):
        res = promtool_check_metrics(scrape_text(m))
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout + res.stderr == ""


@needs_promtool
def test_promtool_check_rules():
    res = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


@needs_promtool
def test_promtool_rule_unit_tests():
    res = subprocess.run([PROMTOOL, "test", "rules", ALERT_TESTS.name], capture_output=True,
                         text=True, timeout=60, cwd=ALERT_TESTS.parent)
    assert res.returncode == 0, res.stdout + res.stderr


# -- rules and dashboard reference real metrics --------------------------------------------------
METRIC_RE = re.compile(r"\bmodemd_[a-z0-9_]+")


def test_alert_rules_reference_existing_metrics():
    known = Metrics().metric_names()
    used = set(METRIC_RE.findall(ALERTS.read_text()))
    assert used - known == set()
    for needed in ("modemd_last_at_response_age_seconds", "modemd_pdp_up", "modemd_reboots_total",
                   "modemd_signal_rssi_dbm", "modemd_connections_failed_total",
                   "modemd_supervisor_state"):
        assert needed in used


def dashboard_exprs(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                out.append(value)
            else:
                out.extend(dashboard_exprs(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(dashboard_exprs(item))
    return out


def test_dashboard_is_valid_and_references_existing_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] == "modemd" and dash["uid"] == "modemd"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    exprs = dashboard_exprs(dash)
    used = {n for e in exprs for n in METRIC_RE.findall(e)}
    known = Metrics().metric_names()
    assert used - known == set()
    # the main series are all on the dashboard
    for needed in ("modemd_supervisor_state", "modemd_signal_rssi_dbm", "modemd_pdp_up",
                   "modemd_at_command_duration_seconds_bucket", "modemd_forward_bytes_total",
                   "modemd_connections_active", "modemd_reboots_total", "modemd_connect_ids_in_use"):
        assert needed in used, needed


# -- the HTTP endpoint --------------------------------------------------------------------------
def test_handle_request_sans_io():
    m = Metrics()
    ok = handle_request(m, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and b"modemd_build_info" in ok
    head = handle_request(m, b"HEAD /metrics HTTP/1.1")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 0\r\n" not in head
    assert handle_request(m, b"GET / HTTP/1.1").startswith(b"HTTP/1.1 404")
    assert handle_request(m, b"POST /metrics HTTP/1.1").startswith(b"HTTP/1.1 405")
    assert handle_request(m, b"nonsense").startswith(b"HTTP/1.1 400")
    assert handle_request(m, b"GET /metrics SPDY/9").startswith(b"HTTP/1.1 400")


def test_handle_request_scrape_failure(monkeypatch, caplog):
    m = Metrics()
    monkeypatch.setattr(m, "generate", lambda accept="": 1 / 0)
    assert handle_request(m, b"GET /metrics HTTP/1.1").startswith(b"HTTP/1.1 500")


async def start_server(nursery, m: Metrics, **kw) -> int:
    listeners = await nursery.start(serve_metrics, m, "127.0.0.1", 0)
    return listeners[0].socket.getsockname()[1]


def fetch(url: str, accept: str | None = None, method: str = "GET"):
    req = urllib.request.Request(url, method=method)
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


async def test_http_server_real_client():
    m = busy_metrics()
    scrapes = []
    m.add_provider(lambda metrics: scrapes.append(1))
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, m)
        base = f"http://127.0.0.1:{port}"
        status, ctype, body = await trio.to_thread.run_sync(fetch, base + "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert b'modemd_supervisor_state{state="serving"} 1.0' in body
        status, ctype, body = await trio.to_thread.run_sync(
            fetch, base + "/metrics", "application/openmetrics-text; version=1.0.0"
        )
        assert status == 200 and ctype.startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")
        status, _, body = await trio.to_thread.run_sync(fetch, base + "/", None)
        assert status == 404
        status, _, _ = await trio.to_thread.run_sync(fetch, base + "/metrics", None, "POST")
        assert status == 405
        assert len(scrapes) == 2
        nursery.cancel_scope.cancel()


async def raw_exchange(port: int, data: bytes, *, close_write: bool = False) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if close_write:
            await stream.send_eof()
        out = b""
        while chunk := await stream.receive_some():
            out += chunk
        return out


async def test_http_limits():
    m = Metrics()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_metrics(m, "127.0.0.1", 0, read_timeout=0.5, max_clients=2,
                                              task_status=task_status)
        )
        port = listeners[0].socket.getsockname()[1]
        # oversized head
        big = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n"
        assert (await raw_exchange(port, big)).startswith(b"HTTP/1.1 431")
        # a client that stops half-way gets 408 after the read deadline
        with trio.fail_after(5):
            assert (await raw_exchange(port, b"GET /metrics HTTP/1.1\r\n")).startswith(b"HTTP/1.1 408")
        # EOF before the end of the head
        assert (await raw_exchange(port, b"GET /met", close_write=True)).startswith(b"HTTP/1.1 400")
        # bare LF line endings are accepted
        assert (await raw_exchange(port, b"GET /metrics HTTP/1.0\n\n")).startswith(b"HTTP/1.1 200")
        # more clients than max_clients: the extra one is refused at once
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.sleep(0.05)
        with trio.fail_after(2):
            assert (await raw_exchange(port, b"")).startswith(b"HTTP/1.1 503")
        for s in idle:
            await s.aclose()
        nursery.cancel_scope.cancel()


@needs_promtool
async def test_promtool_on_real_http_scrape():
    m = busy_metrics()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, m)
        status, _, body = await trio.to_thread.run_sync(fetch, f"http://127.0.0.1:{port}/metrics")
        nursery.cancel_scope.cancel()
    assert status == 200
    res = await trio.to_thread.run_sync(promtool_check_metrics, body.decode())
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing")
async def test_curl_scrape():
    m = Metrics()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, m)
        res = await trio.run_process(
            ["curl", "-sS", "-D", "-", f"http://127.0.0.1:{port}/metrics"], capture_stdout=True
        )
        nursery.cancel_scope.cancel()
    out = res.stdout.decode()
    assert "HTTP/1.1 200 OK" in out and "modemd_start_time_seconds" in out


async def test_server_binds_loopback_only_when_asked():
    m = Metrics()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, m)
        # not reachable on another local address of the host, if it has one
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        except OSError:
            infos = []
        addrs = {ai[4][0] for ai in infos}
        addrs.discard("127.0.0.1")
        for addr in addrs:
            if addr.startswith("127."):
                continue
            with pytest.raises(OSError):
                await trio.open_tcp_stream(addr, port)
        nursery.cancel_scope.cancel()


def test_urc_counts_expose_what_a_prometheus_counter_would():
    """modemd_at_urcs_total is counted in plain ints (one per pushed frame, issue 16) and read at
    scrape time: same families, samples and values as the prometheus_client Counter it replaces,
    in both exposition formats; classes that share a label add up."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    m = Metrics()
    reference = CollectorRegistry()
    counter = Counter("modemd_at_urcs_total", "Unsolicited result codes by type.", ["type"],
                      registry=reference)
    for urc in (Recv(0), Recv(1, 1500, data=b"x"), OtherUrc("+QIND: x"), "raw line", Closed(2),
                PdpDeact(1), Recv(3)):
        m.urc(urc)
        counter.labels(urc_kind(urc)).inc()

    def urc_lines(generate, registry) -> list[str]:
        text = generate(registry).decode()
        lines = [line for line in text.splitlines()
                 if re.match(r"(# \w+ )?modemd_at_urcs(_total|_created)?[ {]", line)]
        return [re.sub(r"(_created\{.*\}) \S+$", r"\1 T", line) for line in lines]

    for generate in (generate_latest, openmetrics):
        mine = urc_lines(generate, m.registry)
        assert mine == urc_lines(generate, reference)
        assert 'modemd_at_urcs_total{type="recv"} 3.0' in mine
    assert m.value("modemd_at_urcs_total", {"type": "other"}) == 2
    assert {"modemd_at_urcs_total", "modemd_at_urcs_created"} <= m.metric_names()
