"""Prometheus metrics: one `Metrics` object per daemon, owning its own CollectorRegistry.

The object is three things at once:
- the registry with every modemd metric (names follow the Prometheus conventions: `modemd_` prefix,
  base units, `_total` counters, `_seconds` durations; `promtool check metrics` passes on a scrape);
- small typed methods the layers call when something happens (`connection_opened`, `reboot`, ...);
- an `modemd.at.channel.Observer`, so `AtChannel(transport, observer=metrics)` feeds the AT metrics.

Values that already live in some object (supervisor state, signal, the connect_id pool) are best copied
in at scrape time: `metrics.add_provider(fn)` registers `fn(metrics)`, called by `collect()` before each
scrape is encoded. A provider that raises is logged and counted, and the scrape goes on.

Label cardinality is bounded: AT command names are sanitised and capped (`MAX_COMMANDS`), result and
URC kinds come from small fixed vocabularies, forward names come from the configuration, connect_ids
from the module's 0..11 range. Nothing here is thread-aware beyond what prometheus_client itself does;
it is meant to be used from the daemon's one trio thread.

Works with prometheus-client 0.16 (Debian 12) to 0.26.
"""

from __future__ import annotations

import logging
import math
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .at.channel import Observer
from .at.radio import REGISTRATION_DOMAINS, csq_to_dbm
from .at.urc import Recv

log = logging.getLogger("modemd.metrics")

#: Supervisor states shown one-hot in modemd_supervisor_state (the values of
#: modemd.supervisor.states.State; tests/test_metrics.py checks they agree). States not listed here
#: are added the first time they are set, so a new supervisor state never breaks the exporter.
SUPERVISOR_STATES: tuple[str, ...] = (
    "starting",
    "port_missing",
    "powering_on",
    "waiting_ready",
    "init",
    "sim",
    "sim_pin_required",
    "sim_pin_rejected",
    "sim_puk_required",
    "sim_not_inserted",
    "cs_registration",
    "ps_registration",
    "configuring",
    "activating",
    "serving",
    "registration_lost",
    "deactivating",
    "recovering",
    "backoff",
    "rebooting",
    "stopped",
)


#: modemd_at_command_duration_seconds buckets: 1 ms (a local `AT`) up to 150 s (QIACT, QIOPEN).
AT_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 90.0, 150.0,
)

#: At most this many distinct AT command labels (modemctl lets operators send any command); the rest
#: are counted under command="other".
MAX_COMMANDS = 64

DIRECTIONS = ("to_module", "from_module")

_RESULT_KINDS = {
    "OK": "ok",
    "ERROR": "error",
    "NO CARRIER": "no_carrier",
    "SEND OK": "send_ok",
    "SEND FAIL": "send_fail",
    "CONNECT": "connect",
    "NO ANSWER": "no_answer",
    "BUSY": "busy",
    "NO DIALTONE": "no_dialtone",
}
_COMMAND_RE = re.compile(r"^[A-Za-z0-9+&$#%^*!_]{1,32}$")
_CAMEL_RE = re.compile(r"(?<!^)(?=[A-Z])")
_LABEL_RE = re.compile(r"[^a-z0-9_]+")

Provider = Callable[["Metrics"], object]


def result_kind(final: str) -> str:
    """The `result` label for a final result code: "OK" -> "ok", "+CME ERROR: 550" -> "cme_error"."""
    final = final.strip()
    if final in _RESULT_KINDS:
        return _RESULT_KINDS[final]
    if final.startswith("+CME ERROR"):
        return "cme_error"
    if final.startswith("+CMS ERROR"):
        return "cms_error"
    if final.startswith("CONNECT"):
        return "connect"
    return "other"


def urc_kind(urc: object) -> str:
    """The `type` label for a parsed URC: Recv -> "recv", PdpDeact -> "pdp_deact", OtherUrc -> "other"."""
    return _kind_label(type(urc))


def _kind_label(kind: type) -> str:
    name = kind.__name__
    if name == "OtherUrc":
        return "other"
    if name == "str":  # an unparsed line, should a caller pass one
        return "other"
    return _CAMEL_RE.sub("_", name).lower()


def label_value(text: object, *, limit: int = 64) -> str:
    """A short, lower-case, [a-z0-9_] label value for free-form reasons and causes."""
    value = _LABEL_RE.sub("_", str(text).strip().lower()).strip("_")
    return value[:limit] or "unknown"


def _num(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _label_sets(metric: Any, forwards: frozenset[str]) -> set[tuple[str, ...]]:
    """The label values of `metric`'s children whose forward is one of `forwards`, in the
    metric's label order (a sample's labels are that order: prometheus_client zips them)."""
    return {tuple(sample.labels.values()) for family in metric.collect()
            for sample in family.samples if sample.labels.get("forward") in forwards}


class UrcCounts:
    """`modemd_at_urcs_total{type}`, a collector over plain counts per URC class.

    The AT reader counts one URC per pushed frame (~650 per MB downloaded); a prometheus_client
    child's inc() is three Python calls and a lock, this is one dict update. Scrapes read the
    counts (labelled by `urc_kind`, several classes may share a label) with the same samples a
    Counter has: `_total` and, unless disabled in prometheus_client, `_created`."""

    NAME = "modemd_at_urcs"
    DOC = "Unsolicited result codes by type."

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counts: dict[type, int] = {}
        self._labels: dict[type, str] = {}
        self._created: dict[str, float] = {}  # label -> first seen (a Counter child's creation)
        registry.register(self)

    def add(self, kind: type) -> None:
        """One URC of class `kind` (labelled by its class name, see `urc_kind`)."""
        counts = self.counts
        if kind in counts:
            counts[kind] += 1
            return
        label = self._labels[kind] = _kind_label(kind)
        self._created.setdefault(label, time.time())
        counts[kind] = 1

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.NAME, self.DOC, labels=["type"])]

    def collect(self) -> Iterable[CounterMetricFamily]:
        totals: dict[str, int] = {}
        for kind, count in list(self.counts.items()):
            label = self._labels[kind]
            totals[label] = totals.get(label, 0) + count
        family = CounterMetricFamily(self.NAME, self.DOC, labels=["type"])
        created = getattr(prometheus_metrics, "_use_created", True)
        for label, total in totals.items():
            family.add_metric([label], total, created=self._created[label] if created else None)
        yield family


class _Durations:
    __slots__ = ("counts", "sum", "created")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0
        self.created = time.time()


class CommandCounts:
    """`modemd_at_command_duration_seconds{command}` and `modemd_at_results_total{command,
    result}`, a collector over plain counts.

    Every AT command ends here, and on the data path that is every QISEND of a stream (~700 per
    MB uploaded): a prometheus_client Histogram.observe and Counter.inc take four locks and a
    dozen Python calls, this is a bisect and two list/dict updates. Scrapes get the samples
    those two metrics had: buckets, `_sum`, `_count` and `_created` per command, `_total` and
    `_created` per command and result."""

    DURATION = "modemd_at_command_duration_seconds"
    DURATION_DOC = "Time from writing an AT command to its final result."
    RESULTS = "modemd_at_results"
    RESULTS_DOC = "Final result codes by command and kind (ok, error, cme_error, send_ok, send_fail, ...)."

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self.bounds = tuple(b for b in buckets if b != math.inf)
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        self.durations: dict[str, _Durations] = {}
        self.results: dict[tuple[str, str], int] = {}
        self._results_created: dict[tuple[str, str], float] = {}
        registry.register(self)

    def first(self, command: str, result: str) -> tuple[_Durations, tuple[str, str]]:
        """The records for a (command label, result label) not seen before."""
        durations = self.durations.get(command)
        if durations is None:
            durations = self.durations[command] = _Durations(len(self.bounds) + 1)
        key = (command, result)
        if key not in self.results:
            self.results[key] = 0
            self._results_created[key] = time.time()
        return durations, key

    def observe(self, records: tuple[_Durations, tuple[str, str]], seconds: float) -> None:
        """One command of those `records` (from `first`) ended after `seconds`."""
        durations, key = records
        seconds = max(0.0, seconds)
        durations.counts[bisect_left(self.bounds, seconds)] += 1
        durations.sum += seconds
        self.results[key] += 1

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.DURATION, self.DURATION_DOC, labels=["command"]),
                CounterMetricFamily(self.RESULTS, self.RESULTS_DOC, labels=["command", "result"])]

    def collect(self) -> Iterable[Metric]:
        created = getattr(prometheus_metrics, "_use_created", True)
        hist = HistogramMetricFamily(self.DURATION, self.DURATION_DOC, labels=["command"])
        for command, d in list(self.durations.items()):
            total, buckets = 0, []
            for le, count in zip(self._les, d.counts, strict=True):
                total += count
                buckets.append((le, total))
            hist.add_metric([command], buckets, d.sum)
            if created:
                hist.samples.append(Sample(self.DURATION + "_created", {"command": command},
                                           d.created))
        yield hist
        results = CounterMetricFamily(self.RESULTS, self.RESULTS_DOC, labels=["command", "result"])
        for key, count in list(self.results.items()):
            results.add_metric(list(key), count,
                               created=self._results_created[key] if created else None)
        yield results


class Metrics(Observer):
    """Every modemd metric, in `self.registry`. See the module docstring."""

    def __init__(
        self,
        *,
        states: Iterable[str] = SUPERVISOR_STATES,
        registry: CollectorRegistry | None = None,
        version: str | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._providers: list[Provider] = []
        self._states: list[str] = []
        self._commands: set[str] = set()
        self._active: dict[str, int] = {}
        self._synced: dict[tuple[int, tuple[str, ...]], float] = {}
        self._forwards: frozenset[str] = frozenset()  # the names that have per-forward series
        self._domains: set[str] = set()
        r = self.registry

        # -- daemon ------------------------------------------------------------------------------
        self.build_info = Info("modemd_build", "modemd version.", registry=r)
        self.start_time = Gauge(
            "modemd_start_time_seconds", "Unix time the daemon started.", registry=r
        )
        self.provider_errors = Counter(
            "modemd_metrics_provider_errors_total",
            "Scrape-time metric providers that raised.",
            registry=r,
        )

        # -- module ------------------------------------------------------------------------------
        self.module_info = Info(
            "modemd_module", "Module identity (model, firmware, IMEI) as read at boot.", registry=r
        )
        self.supervisor_state = Gauge(
            "modemd_supervisor_state",
            "Supervisor state machine, one-hot: 1 for the current state.",
            ["state"],
            registry=r,
        )
        self.registration_state = Gauge(
            "modemd_registration_state",
            "Network registration <stat> per domain (cs=CREG, ps=CGREG, eps=CEREG, 5gs=C5GREG): "
            "0 not registered, 1 home, 2 searching, 3 denied, 4 unknown, 5 roaming.",
            ["domain"],
            registry=r,
        )
        self.registration_losses = Counter(
            "modemd_registration_losses_total",
            "Network registrations lost while serving (state registration_lost; no reboot).",
            registry=r,
        )
        self.network_info = Info(
            "modemd_network", "Serving operator (AT+COPS? name or MCC+MNC) and access technology.",
            registry=r,
        )
        self.signal_csq = Gauge(
            "modemd_signal_csq", "AT+CSQ <rssi> (0..31, NaN when unknown/99).", registry=r
        )
        self.signal_rssi = Gauge(
            "modemd_signal_rssi_dbm", "Received signal strength in dBm.", registry=r
        )
        self.signal_rsrp = Gauge(
            "modemd_signal_rsrp_dbm", "LTE/NR reference signal received power in dBm.", registry=r
        )
        self.signal_rsrq = Gauge(
            "modemd_signal_rsrq_db", "LTE/NR reference signal received quality in dB.", registry=r
        )
        self.signal_sinr = Gauge(
            "modemd_signal_sinr_db", "Signal to interference plus noise ratio in dB.", registry=r
        )
        self.pdp_up = Gauge(
            "modemd_pdp_up", "1 if the PDP context is active.", ["context_id"], registry=r
        )
        self.pdp_address = Info(
            "modemd_pdp_address", "Address of an active PDP context.", ["context_id"], registry=r
        )
        self.sim_pin_attempts_left = Gauge(
            "modemd_sim_pin_attempts_left",
            "PIN attempts the SIM has left (AT+QPINC; NaN: unknown or no AT+QPINC).", registry=r,
        )
        self.sim_puk_attempts_left = Gauge(
            "modemd_sim_puk_attempts_left",
            "PUK attempts the SIM has left (AT+QPINC; NaN: unknown or no AT+QPINC).", registry=r,
        )
        self.last_at_response_age = Gauge(
            "modemd_last_at_response_age_seconds",
            "Seconds since the module last answered an AT command (+Inf: never).",
            registry=r,
        )

        # -- AT channel --------------------------------------------------------------------------
        self.at_commands = CommandCounts(r, AT_DURATION_BUCKETS)
        self.at_timeouts = Counter(
            "modemd_at_command_timeouts_total",
            "AT commands that got no final result within their deadline.",
            ["command"],
            registry=r,
        )
        self.at_lost = Counter(
            "modemd_at_commands_lost_total",
            "AT commands (or their answers) lost on the line: unanswered past their expected "
            "time while the module answered the probe (no reboot; the caller retried).",
            ["command"],
            registry=r,
        )
        self.module_silences = Counter(
            "modemd_module_silences_total",
            "Times the module answered neither a command nor the probe series (the supervisor "
            "resyncs, then climbs the reboot ladder if it stays silent).",
            registry=r,
        )
        self.resyncs = Counter(
            "modemd_module_resyncs_total",
            "Silences that ended with an answered resync probe: no reboot, connections kept.",
            registry=r,
        )
        self.at_urcs = UrcCounts(r)
        # one per AT command on the data path (each QISEND): its records looked up once
        self._command_records: dict[tuple[str, str], tuple[_Durations, tuple[str, str]]] = {}
        self.at_unknown_lines = Counter(
            "modemd_at_unknown_lines_total",
            "Lines from the module that were neither a response nor a known URC.",
            registry=r,
        )
        self.unsolicited_lines = Counter(
            "modemd_unsolicited_lines_total",
            "Lines the module printed that modemd has no use for (real modules' chatter, a garbled "
            "echo), by prefix: the line up to ':' (at most 64 prefixes, then 'other').",
            ["prefix"],
            registry=r,
        )
        self.at_line_end_silences = Counter(
            "modemd_at_line_end_silences_total",
            "Lines whose CR was followed by silence instead of LF (a module ending lines with CR).",
            registry=r,
        )
        self.at_framing_resyncs = Counter(
            "modemd_at_framing_resyncs_total",
            "Times the AT framing state was reset (module reboot, lost sync).",
            registry=r,
        )
        self.at_urcs_dropped = Counter(
            "modemd_at_urcs_dropped_total",
            "URCs dropped because a subscriber was not keeping up.",
            registry=r,
        )

        # -- data path ---------------------------------------------------------------------------
        self.forward_bytes = Counter(
            "modemd_forward_bytes_total",
            "Payload bytes moved per forward; direction is to_module or from_module.",
            ["forward", "direction"],
            registry=r,
        )
        self.connections_opened = Counter(
            "modemd_connections_opened_total",
            "Module sockets opened for a forward (QIOPEN succeeded or incoming accepted).",
            ["forward"],
            registry=r,
        )
        self.connections_closed = Counter(
            "modemd_connections_closed_total",
            "Opened connections that ended, by reason.",
            ["forward", "reason"],
            registry=r,
        )
        self.connections_failed = Counter(
            "modemd_connections_failed_total",
            "Connections that could not be opened, by Quectel result code or reason.",
            ["forward", "code"],
            registry=r,
        )
        self.datagrams_dropped = Counter(
            "modemd_datagrams_dropped_total",
            "UDP datagrams dropped, by reason (oversize: larger than the module's QISEND maximum; "
            "queue_full, too_many_peers, malformed, foreign_sender, no_sender, target_unreachable).",
            ["forward", "reason"],
            registry=r,
        )
        self.connections_active = Gauge(
            "modemd_connections_active", "Open connections per forward.", ["forward"], registry=r
        )
        self.connect_ids_in_use = Gauge(
            "modemd_connect_ids_in_use", "Module connect_ids not free (open, closing, quarantined).",
            registry=r,
        )
        self.connect_ids_available = Gauge(
            "modemd_connect_ids_available", "Free module connect_ids.", registry=r
        )
        self.send_fails = Counter(
            "modemd_send_fail_total", "AT+QISEND answered SEND FAIL (module buffer full).",
            registry=r,
        )
        self.unacked_bytes = Gauge(
            "modemd_unacked_bytes",
            "Bytes sent on a module socket and not yet acknowledged by the peer.",
            ["connect_id"],
            registry=r,
        )
        self.bytes_pushed = Counter(
            "modemd_pushed_bytes",
            "Bytes the module delivered by direct push (the rest came with AT+QIRD).",
            registry=r,
        )
        self.access_mode_switches = Counter(
            "modemd_access_mode_switches",
            "AT+QISWTMD switches between direct push and buffer mode (a local reader lagging, "
            "then keeping up again).",
            registry=r,
        )
        self.reconcile_recoveries = Counter(
            "modemd_reconcile_recoveries_total",
            "Times the periodic AT+QISTATE reconcile found and fixed a socket state mismatch.",
            registry=r,
        )
        self.queued_connections = Gauge(
            "modemd_queued_connections", "Local connections waiting for a free connect_id.",
            registry=r,
        )

        # -- recovery ----------------------------------------------------------------------------
        self.pdp_activations = Counter(
            "modemd_pdp_activations_total", "PDP context activations (AT+QIACT) that succeeded.",
            ["context_id"],
            registry=r,
        )
        self.reboots = Counter(
            "modemd_reboots_total", "Module reboots by ladder step and cause.", ["step", "cause"],
            registry=r,
        )
        self.next_reboot = Gauge(
            "modemd_next_reboot_timestamp_seconds",
            "Unix time of the next scheduled reboot (0: none scheduled).",
            registry=r,
        )
        self.reboot_backoff_count = Gauge(
            "modemd_consecutive_reboots",
            "Consecutive reboots counted by the back-off schedule (resets after a healthy period).",
            registry=r,
        )
        self.power_cycles = Counter(
            "modemd_power_cycles_total", "Module power cycles (supply or PWRKEY).", registry=r
        )

        from . import __version__ as pkg_version  # late: keeps import order simple

        self.build_info.info({"version": version or pkg_version})
        self.start_time.set(time.time())
        for state in states:
            self._add_state(state)
        self.set_supervisor_state(self._states[0] if self._states else "starting")
        self.last_at_response_age.set(math.inf)
        self.set_signal()
        self.next_reboot.set(0)

    # -- providers & exposition -------------------------------------------------------------------
    def add_provider(self, provider: Provider) -> None:
        """Call `provider(self)` before every scrape (to copy state in); exceptions are logged."""
        self._providers.append(provider)

    def remove_provider(self, provider: Provider) -> None:
        self._providers.remove(provider)

    def collect(self) -> None:
        """Run every provider. `generate` calls this; call it yourself before reading values."""
        for provider in list(self._providers):
            try:
                provider(self)
            except Exception:
                self.provider_errors.inc()
                log.exception("metrics provider %r failed", provider)

    def generate(self, accept: str = "") -> tuple[bytes, str]:
        """Run the providers and encode the registry for an Accept header: (body, content_type)."""
        self.collect()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def sync_counter(self, counter: Counter, total: float, *labels: str) -> None:
        """Make `counter` (with `labels`) follow `total`, a cumulative count kept elsewhere.

        For providers copying plain attributes in (`FlowStats.bytes_up`, `SocketStats.send_fail`):
        the counter grows by the growth since the previous call; a smaller total (the source
        object was replaced, e.g. after a restart of that layer) counts as growth from 0, which is
        how Prometheus' rate() treats a counter reset. Do not mix with inc() on the same series.
        """
        key = (id(counter), labels)
        last = self._synced.get(key, 0.0)
        delta = total - last if total >= last else total
        self._synced[key] = float(total)
        child = counter.labels(*labels) if labels else counter
        if delta > 0:
            child.inc(delta)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The current value of one sample (for tests and status output), or None."""
        return self.registry.get_sample_value(name, labels or {})

    # -- daemon-wide declarations -------------------------------------------------------------------
    def declare_forwards(self, names: Iterable[str]) -> None:
        """Create the per-forward series at 0, so rate()/increase() see the first event."""
        names = list(names)
        self._forwards |= frozenset(names)
        for name in names:
            for direction in DIRECTIONS:
                self.forward_bytes.labels(name, direction)
            self.connections_opened.labels(name)
            self.set_connections_active(name, self._active.get(name, 0))

    def keep_forwards(self, names: Iterable[str]) -> None:
        """Series only for these forwards (listeners, "socks"): those of a name a reload removed
        go, instead of showing its last values in every scrape until the daemon restarts."""
        keep = frozenset(names)
        gone, self._forwards = self._forwards - keep, keep
        if not gone:
            return
        per_forward = (self.forward_bytes, self.connections_opened, self.connections_closed,
                       self.connections_failed, self.datagrams_dropped, self.connections_active)
        for metric in per_forward:
            for labels in _label_sets(metric, gone):
                metric.remove(*labels)
        ids = {id(metric) for metric in per_forward}
        self._synced = {key: total for key, total in self._synced.items()
                        if key[0] not in ids or key[1][0] not in gone}
        for name in gone:
            self._active.pop(name, None)

    def declare_context(self, context_id: int) -> None:
        """Create the PDP series at 0 for the configured context."""
        self.pdp_up.labels(str(context_id)).set(0)
        self.pdp_activations.labels(str(context_id))

    # -- module ----------------------------------------------------------------------------------
    def set_module_info(self, *, model: str = "", firmware: str = "", imei: str = "") -> None:
        self.module_info.info({"model": model, "firmware": firmware, "imei": imei})

    def _add_state(self, state: str) -> None:
        if state not in self._states:
            self._states.append(state)
            self.supervisor_state.labels(state).set(0)

    def set_supervisor_state(self, state: str) -> None:
        """One-hot: the given state 1, every other known state 0 (unknown states are added)."""
        state = str(getattr(state, "value", state))
        self._add_state(state)
        for known in self._states:
            self.supervisor_state.labels(known).set(1 if known == state else 0)

    def set_registration(self, domain: str, stat: int | None) -> None:
        """`domain`: cs/ps/eps/5gs or a URC kind (CREG, CGREG, CEREG, C5GREG); stat None = unknown."""
        domain = REGISTRATION_DOMAINS.get(domain.upper(), domain.lower())
        self.registration_state.labels(domain).set(_num(stat))

    def set_registrations(self, stats: dict[str, int | None]) -> None:
        """Every domain's <stat> (kind -> stat); a domain shown before but absent now (the module
        restarted, nothing reported yet) becomes NaN, not its stale value."""
        shown = {REGISTRATION_DOMAINS.get(k.upper(), k.lower()): v for k, v in stats.items()}
        for domain in self._domains - shown.keys():
            self.registration_state.labels(domain).set(math.nan)
        for domain, stat in shown.items():
            self.registration_state.labels(domain).set(_num(stat))
        self._domains |= shown.keys()

    def set_network(self, operator: str, act: str) -> None:
        """The serving operator and access technology (LTE-M, NB-IoT, NR-5GC ...)."""
        self.network_info.info({"operator": operator, "act": act})

    def set_signal(
        self,
        csq: int | None = None,
        rssi_dbm: float | None = None,
        *,
        rsrp_dbm: float | None = None,
        rsrq_db: float | None = None,
        sinr_db: float | None = None,
    ) -> None:
        """Signal quality; None (or CSQ 99) is shown as NaN. rssi_dbm defaults to the CSQ's dBm."""
        if csq is not None and not 0 <= csq <= 31:
            csq = None
        if rssi_dbm is None:
            rssi_dbm = csq_to_dbm(csq)
        self.signal_csq.set(_num(csq))
        self.signal_rssi.set(_num(rssi_dbm))
        self.signal_rsrp.set(_num(rsrp_dbm))
        self.signal_rsrq.set(_num(rsrq_db))
        self.signal_sinr.set(_num(sinr_db))

    def set_pdp(self, context_id: int, up: bool, address: str | None = None) -> None:
        """PDP context state; the address series exists only while the context is up."""
        cid = str(context_id)
        self.pdp_up.labels(cid).set(1 if up else 0)
        if up and address:
            self.pdp_address.labels(cid).info({"address": address})
        else:
            try:
                self.pdp_address.remove(cid)
            except KeyError:
                pass

    def set_last_at_response_age(self, seconds: float | None) -> None:
        """Seconds since the module's last final result; None = never (+Inf)."""
        self.last_at_response_age.set(math.inf if seconds is None else max(0.0, float(seconds)))

    # -- AT channel (Observer) --------------------------------------------------------------------
    def _command(self, name: str) -> str:
        name = name.strip().upper()
        if not _COMMAND_RE.match(name):
            return "other"
        if name not in self._commands:
            if len(self._commands) >= MAX_COMMANDS:
                return "other"
            self._commands.add(name)
        return name

    def command_done(self, name: str, seconds: float, final: str) -> None:
        records = self._command_records.get((name, final))
        if records is None:
            records = self.at_commands.first(self._command(name), result_kind(final))
            if len(self._command_records) < 4 * MAX_COMMANDS:
                self._command_records[(name, final)] = records
        self.at_commands.observe(records, seconds)

    def command_timeout(self, name: str) -> None:
        self.at_timeouts.labels(self._command(name)).inc()

    def command_lost(self, name: str) -> None:
        self.at_lost.labels(self._command(name)).inc()

    def module_silent(self, name: str, seconds: float) -> None:
        self.module_silences.inc()

    def urc(self, urc: object) -> None:
        self.at_urcs.add(type(urc))  # a plain count, labelled at scrape time

    def pushed(self, connect_id: int, size: int) -> None:
        # a direct-push frame is a "recv" URC, the fast lane just has no URC object for it
        self.at_urcs.add(Recv)

    def unknown_line(self, text: str) -> None:
        self.at_unknown_lines.inc()

    def urc_dropped(self, urc: object) -> None:
        self.at_urcs_dropped.inc()

    def framing_resync(self) -> None:
        self.at_framing_resyncs.inc()

    # -- data path --------------------------------------------------------------------------------
    def forwarded(self, forward: str, direction: str, nbytes: int) -> None:
        """`nbytes` payload bytes moved; direction "to_module" or "from_module"."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        if nbytes > 0:
            self.forward_bytes.labels(forward, direction).inc(nbytes)

    def connection_opened(self, forward: str) -> None:
        """A module socket opened for `forward`; also raises modemd_connections_active."""
        self.connections_opened.labels(forward).inc()
        self.set_connections_active(forward, self._active.get(forward, 0) + 1)

    def connection_closed(self, forward: str, reason: str) -> None:
        """An opened connection ended (reason: local_close, remote_close, pdp_deact, reboot, ...)."""
        self.connections_closed.labels(forward, label_value(reason)).inc()
        self.set_connections_active(forward, self._active.get(forward, 0) - 1)

    def connection_failed(self, forward: str, code: int | str) -> None:
        """Opening failed; `code` is the Quectel result code (565) or a short reason ("timeout")."""
        code_label = str(code) if isinstance(code, int) else label_value(code)
        self.connections_failed.labels(forward, code_label).inc()
        self.connections_opened.labels(forward)  # at 0, so failure ratios can be computed

    def set_connections_active(self, forward: str, count: int) -> None:
        """Set the open-connection count (a provider may copy the socket manager's number in)."""
        count = max(0, int(count))
        self._active[forward] = count
        self.connections_active.labels(forward).set(count)

    def set_connect_ids(self, in_use: int, available: int) -> None:
        self.connect_ids_in_use.set(in_use)
        self.connect_ids_available.set(available)

    def send_fail(self) -> None:
        self.send_fails.inc()

    def set_unacked(self, connect_id: int, nbytes: int | None) -> None:
        """Unacknowledged bytes on a connect_id; None removes the series (socket closed)."""
        if nbytes is None:
            try:
                self.unacked_bytes.remove(str(connect_id))
            except KeyError:
                pass
        else:
            self.unacked_bytes.labels(str(connect_id)).set(nbytes)

    def reconcile_recovery(self) -> None:
        self.reconcile_recoveries.inc()

    def set_queued_connections(self, count: int) -> None:
        self.queued_connections.set(count)

    # -- recovery ---------------------------------------------------------------------------------
    def pdp_activated(self, context_id: int) -> None:
        self.pdp_activations.labels(str(context_id)).inc()

    def reboot(self, step: str, cause: str) -> None:
        """A reboot was performed; step is the ladder rung (cfun, qpowd, pwrkey, power_cycle, ...)."""
        self.reboots.labels(label_value(step), label_value(cause)).inc()

    def set_sim(self, status: Any) -> None:
        """The supervisor's SimStatus: attempts left (None -> NaN); the state is the supervisor's."""
        self.sim_pin_attempts_left.set(_num(status.pin_attempts_left))
        self.sim_puk_attempts_left.set(_num(status.puk_attempts_left))

    def set_next_reboot(self, timestamp: float | None) -> None:
        """Unix time of the next scheduled reboot; None = nothing scheduled (0)."""
        self.next_reboot.set(0 if timestamp is None else timestamp)

    def set_reboot_backoff(self, count: int) -> None:
        self.reboot_backoff_count.set(count)

    def power_cycle(self) -> None:
        self.power_cycles.inc()

    # -- introspection --------------------------------------------------------------------------
    def metric_names(self) -> set[str]:
        """Every sample name this registry can expose (for dashboards and rules to be checked)."""
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
            "info": ("_info",),
        }
        names: set[str] = set()
        for family in self.registry.collect():
            for suffix in suffixes.get(family.type, ("",)):
                names.add(family.name + suffix)
            names.update(sample.name for sample in family.samples)
        return names
