"""The reboot back-off schedule (manual note 3), with exact numbers."""

from __future__ import annotations

import pytest

from modemd.supervisor.backoff import RebootSchedule


def run_failures(schedule: RebootSchedule, n: int, start: float = 0.0, work: float = 0.0):
    """Fail `n` times in a row: each reboot runs when due and fails `work` s later."""
    now = start
    due_times = []
    for i in range(n):
        due = schedule.request(now, f"qiact_timeout: attempt {i + 1}")
        due_times.append(due)
        now = due
        schedule.rebooted(now)
        now += work
    return due_times


def test_manual_schedule_exact_times():
    s = RebootSchedule(jitter=0.0)
    assert [s.base_delay(n) for n in range(1, 10)] == [
        0, 0, 0, 0, 600, 1800, 3600, 3600, 3600
    ]
    # Each attempt fails 100 s after its reboot (bring-up, then the failing command).
    due = run_failures(s, 9, start=1000.0, work=100.0)
    assert due == [
        1000.0,             # 1st: at once
        1100.0,             # 2nd: at once
        1200.0,             # 3rd: at once
        1300.0,             # 4th: "immediately for the fourth time"
        1400.0 + 600,       # 5th: 10 minutes after the failure
        2100.0 + 1800,      # 6th: 30 minutes
        4000.0 + 3600,      # 7th: 1 hour
        7700.0 + 3600,      # and every hour after that
        11400.0 + 3600,
    ]
    assert s.count == 9 and s.total == 9
    assert s.next_reboot_time is None
    assert s.reasons["qiact_timeout"] == 9
    assert s.last_reason == "qiact_timeout: attempt 9"
    assert [r.number for r in s.history] == list(range(1, 10))


def test_next_reboot_time_is_visible_and_request_is_idempotent():
    s = RebootSchedule(jitter=0.0)
    run_failures(s, 4)
    assert s.request(50.0, "no_answer: AT") == 650.0
    assert s.next_reboot_time == 650.0
    assert s.pending_reason == "no_answer: AT"
    assert s.seconds_until_reboot(200.0) == 450.0
    # a second failure while waiting does not push the reboot further out
    assert s.request(300.0, "qiclose_timeout") == 650.0
    assert s.pending_reason == "no_answer: AT"
    record = s.rebooted(650.0)
    assert (record.requested, record.due, record.number) == (50.0, 650.0, 5)
    assert s.seconds_until_reboot(651.0) is None


def test_jitter_only_lengthens_nonzero_delays():
    s = RebootSchedule(jitter=0.1, rng=lambda: 0.5)
    assert run_failures(s, 4) == [0.0, 0.0, 0.0, 0.0]      # the immediate ones stay immediate
    assert s.request(0.0, "x") == pytest.approx(630.0)      # 600 + 600 * 0.1 * 0.5
    s.rebooted(630.0)
    assert s.request(630.0, "x") == pytest.approx(630.0 + 1890.0)
    s.rebooted(2520.0)
    assert s.request(2520.0, "x") == pytest.approx(2520.0 + 3780.0)


def test_jitter_spreads_a_fleet():
    fleet = []
    for seed in range(20):
        import random

        s = RebootSchedule(jitter=0.1, rng=random.Random(seed).random)
        run_failures(s, 4)
        fleet.append(s.request(0.0, "x"))
    assert all(600.0 <= t < 660.0 for t in fleet)
    assert len(set(fleet)) == 20


def test_count_resets_after_healthy_period():
    s = RebootSchedule(jitter=0.0, healthy_reset=3600.0)
    run_failures(s, 5)
    assert s.count == 5
    s.serving(10_000.0)
    s.interrupted(10_000.0 + 3599.0)    # served 59 min 59 s: not long enough
    assert s.count == 5
    assert s.request(14_000.0, "x") == 14_000.0 + 1800.0   # the 6th waits 30 min
    s.rebooted(15_800.0)
    s.serving(16_000.0)
    assert not s.refresh(16_000.0 + 3599.0)
    assert s.refresh(16_000.0 + 3600.0)                     # healthy hour: the run is over
    assert s.count == 0
    assert s.request(20_000.0, "x") == 20_000.0             # back to "at once"


def test_reset_applies_when_the_failure_ends_a_long_healthy_spell():
    s = RebootSchedule(jitter=0.0, healthy_reset=100.0)
    run_failures(s, 6)
    s.serving(0.0)
    s.serving(50.0)                     # still the same healthy spell
    assert s.healthy_since == 0.0
    # the module served for 200 s, then failed: counted as a fresh run
    assert s.request(200.0, "x") == 200.0
    assert s.healthy_since is None


def test_bad_jitter_rejected():
    with pytest.raises(ValueError):
        RebootSchedule(jitter=1.5)
