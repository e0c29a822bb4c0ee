"""ModemLink's open-failure rule (flowchart §1.1: 5 consecutive failed QIOPENs -> PDP cycle)."""

from __future__ import annotations

import logging

import pytest
import trio

from modemd.link import CYCLE_MIN_INTERVAL, ModemLink


def cycles(link: ModemLink) -> list[int]:
    out = []
    while True:
        try:
            out.append(link.cycle_requests.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_failures_that_implicate_the_context_cycle_it():
    link = ModemLink()
    for _ in range(5):
        link.report_open(1, False)
    assert cycles(link) == [1]


async def test_one_dead_remote_never_cycles_the_context(caplog):
    caplog.set_level(logging.INFO, logger="modemd.supervisor")
    link = ModemLink()
    for _ in range(15):
        link.report_open(1, False, remote="198.51.100.7:1883")
    assert cycles(link) == []
    assert "that remote's trouble" in caplog.text


async def test_failures_across_two_remotes_or_mixed_with_context_ones_cycle():
    link = ModemLink()
    for i in range(5):
        link.report_open(1, False, remote=f"h{i % 2}:80")
    assert cycles(link) == [1]
    link2 = ModemLink()
    for _ in range(4):
        link2.report_open(2, False, remote="h:80")
    link2.report_open(2, False)  # an open timeout: the context's
    assert cycles(link2) == [2]


async def test_a_success_breaks_the_run():
    link = ModemLink()
    for _ in range(4):
        link.report_open(1, False)
    link.report_open(1, True)
    for _ in range(4):
        link.report_open(1, False)
    assert cycles(link) == [] and link.context(1).open_failures == 4


async def test_cycles_for_failed_opens_are_rate_limited(autojump_clock, caplog):
    link = ModemLink()
    for _ in range(5):
        link.report_open(1, False)
    assert cycles(link) == [1]
    await trio.sleep(CYCLE_MIN_INTERVAL / 2)
    for _ in range(5):
        link.report_open(1, False)
    assert cycles(link) == [] and link.context(1).cycles_suppressed == 1
    assert "at most one per 300 s" in caplog.text
    await trio.sleep(CYCLE_MIN_INTERVAL / 2)
    for _ in range(5):
        link.report_open(1, False)
    assert cycles(link) == [1]


@pytest.mark.parametrize("reason", ["dns_failed", "socket_connect_failed", "operation_timeout"])
def test_remote_failures_are_classified_as_remote(reason):
    from modemd.sockets.errors import CONTEXT_OPEN_FAILURES, REMOTE_OPEN_FAILURES

    assert reason in REMOTE_OPEN_FAILURES and reason not in CONTEXT_OPEN_FAILURES
    assert {"pdp_broken", "open_timeout", "apn_not_configured"} <= CONTEXT_OPEN_FAILURES
