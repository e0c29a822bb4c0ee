"""Copies the daemon's state into the metrics registry at every scrape.

Layers keep plain counters and attributes (they know nothing of Prometheus); this is the one place
that maps them onto metric names, so a scrape always shows the current state without any layer
pushing updates.
"""

from __future__ import annotations


def provide(daemon, m) -> None:
    _module(daemon, m)
    _data_path(daemon, m)
    _recovery(daemon, m)
    m.set_sim(daemon.supervisor.sim)  # the SIM's attempts left (the supervisor's SimStatus)


def _module(daemon, m) -> None:
    link, sup = daemon.link, daemon.supervisor
    m.set_supervisor_state(link.state)
    if link.identity:
        m.set_module_info(**{k: link.identity.get(k, "") for k in ("model", "firmware", "imei")})
    for keeper in sup.contexts:
        ctx = link.context(keeper.context_id)
        m.set_pdp(keeper.context_id, ctx.up, ", ".join(ctx.addresses) or None)
    stats = sup.channel_stats
    if stats is not None:
        age = stats.seconds_since_answer
        m.set_last_at_response_age(age if age != float("inf") else None)
        m.sync_counter(m.at_framing_resyncs, stats.framing_resyncs)
        for prefix, n in stats.unsolicited.items():
            m.sync_counter(m.unsolicited_lines, n, prefix)
        m.sync_counter(m.at_line_end_silences, stats.line_end_silences)
    _radio(link.radio, m)


def _radio(radio, m) -> None:
    """link.radio (the radio task's publication) onto the signal / registration metrics."""
    quality = radio.quality
    m.set_signal(
        radio.csq, radio.rssi_dbm if radio.rssi_dbm is not None else (quality and quality.rssi_dbm),
        rsrp_dbm=quality and quality.rsrp_dbm, rsrq_db=quality and quality.rsrq_db,
        sinr_db=quality and quality.sinr_db,
    )
    m.set_registrations({kind: reg.stat for kind, reg in radio.registration.items()})
    m.sync_counter(m.registration_losses, radio.losses)
    op = radio.operator
    if op is not None:
        m.set_network(op.name or op.numeric, op.technology or (quality.sysmode if quality else ""))


def _data_path(daemon, m) -> None:
    manager, proxy = daemon.manager, daemon.proxy
    stats = manager.stats
    pool = manager.pool
    if pool is not None:
        m.set_connect_ids(pool.in_use, pool.available)
        m.set_queued_connections(pool.queued)
    m.sync_counter(m.send_fails, stats.send_fail)
    m.sync_counter(m.reconcile_recoveries, stats.reconcile_recoveries)
    m.sync_counter(m.bytes_pushed, stats.bytes_pushed)
    m.sync_counter(m.access_mode_switches, stats.mode_switches)
    m.keep_forwards(proxy.flows)  # a forward a reload removed: its series go
    for flow in proxy.flows.values():
        m.sync_counter(m.forward_bytes, flow.bytes_up, flow.name, "to_module")
        m.sync_counter(m.forward_bytes, flow.bytes_down, flow.name, "from_module")
        m.sync_counter(m.connections_opened, flow.opened, flow.name)
        m.set_connections_active(flow.name, flow.active)
        for reason, n in flow.refused.items():
            m.sync_counter(m.connections_failed, n, flow.name, str(reason))
        for reason, n in flow.datagrams_dropped.items():
            m.sync_counter(m.datagrams_dropped, n, flow.name, reason)
        for reason, n in flow.resets.items():
            m.sync_counter(m.connections_closed, n, flow.name, f"reset_{reason}")
        clean = flow.closed - sum(flow.resets.values())
        m.sync_counter(m.connections_closed, max(clean, 0), flow.name, "closed")
    if pool is not None:
        unacked = manager.unacked_by_connect_id
        for connect_id in pool.connect_ids:
            m.set_unacked(connect_id, unacked.get(connect_id))


def _recovery(daemon, m) -> None:
    sup = daemon.supervisor
    for (step, cause), n in sup.reboots_by_step_cause.items():
        m.sync_counter(m.reboots, n, step, cause)
    for keeper in sup.contexts:
        m.sync_counter(m.pdp_activations, keeper.activations, str(keeper.context_id))
    m.set_next_reboot(sup.next_reboot_unix or None)
    m.set_reboot_backoff(sup.reboot_count)
    cycles = sum(n for step, n in sup.ladder_steps.items() if step in ("supply_cut", "pwrkey"))
    m.sync_counter(m.power_cycles, cycles)
    m.sync_counter(m.resyncs, sup.resyncs)
