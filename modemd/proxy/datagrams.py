"""Dropped datagrams: counted by reason for metrics, logged at most once a minute per reason.

UDP has no back-pressure, so a datagram the module cannot take (larger than the family's QISEND
maximum, a full queue, too many peers) is dropped; an operator must still see that it happens.
"""

from __future__ import annotations

import logging

import trio

from .stats import FlowStats

log = logging.getLogger("modemd.proxy")

LOG_INTERVAL = 60.0  # s between two log lines of one reason on one forward


def drop_datagram(flow: FlowStats, reason: str, detail: str) -> None:
    """Count one dropped datagram; log the first of each reason, then at most one a minute."""
    flow.datagrams_dropped[reason] += 1
    now = trio.current_time()
    last = flow.drops_logged.get(reason)
    if last is not None and now - last < LOG_INTERVAL:
        return
    flow.drops_logged[reason] = now
    log.warning(
        "%s %s: dropped a datagram: %s (%d dropped for this reason so far; "
        "at most one such line a minute)", flow.kind, flow.name, detail,
        flow.datagrams_dropped[reason], extra={"FORWARD": flow.name},
    )
