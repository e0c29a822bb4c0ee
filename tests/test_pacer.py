"""The read pacer (modemd/at/pacer.py): waits only inside a payload, for as long as its rest needs
at the measured rate, and never slows a port that is faster than it measured."""

from __future__ import annotations

import pytest

from modemd.at.framer import Framer
from modemd.at.pacer import MAX_WAIT, ReadPacer


def test_no_wait_outside_a_payload_or_before_a_rate_was_measured():
    pacer = ReadPacer()
    assert pacer.after_read(0.0, 100, 0) == 0.0       # between frames
    assert pacer.after_read(1.0, 460, 1040) == 0.0    # first read inside a payload: no rate yet
    assert pacer.rate is None


def test_waits_for_the_rest_of_the_payload_at_the_measured_rate():
    pacer = ReadPacer()
    pacer.after_read(0.000, 460, 1040)
    wait = pacer.after_read(0.005, 460, 580)          # 460 bytes in 5 ms: 92,000 B/s
    assert pacer.rate == pytest.approx(92_000)
    assert wait == pytest.approx(580 / 92_000)


def test_a_faster_line_raises_the_estimate_at_once_and_a_wait_is_capped():
    pacer = ReadPacer()
    pacer.after_read(0.0, 10, 100_000)
    assert pacer.after_read(1.0, 10, 100_000) == MAX_WAIT   # 10 B/s: capped
    pacer.after_read(1.05, 5_000_000, 100_000)               # USB speed: 100 MB/s measured
    assert pacer.rate == pytest.approx(100e6)
    assert pacer.after_read(1.06, 1000, 1000) == 0.0         # 10 us: not worth a timer


def test_a_slower_sample_lowers_the_estimate_only_gradually():
    pacer = ReadPacer()
    pacer.after_read(0.0, 0, 1000)
    pacer.after_read(0.01, 1000, 1000)                       # 100,000 B/s
    pacer.after_read(0.02, 100, 1000)                        # 10,000 B/s sample
    assert pacer.rate == pytest.approx(0.75 * 100_000 + 0.25 * 10_000)


def test_a_read_that_ends_the_payload_ends_the_busy_period():
    pacer = ReadPacer()
    pacer.after_read(0.0, 0, 1000)
    pacer.after_read(0.01, 1000, 0)                          # the payload is complete
    rate = pacer.rate
    wait = pacer.after_read(5.0, 10, 500)  # after an idle gap: no sample, the old estimate holds
    assert pacer.rate == rate == pytest.approx(100_000)
    assert wait == pytest.approx(500 / 100_000)


def test_framer_reports_the_payload_bytes_still_missing():
    framer = Framer()
    assert framer.payload_missing == 0
    framer.feed(b"+QIRD: 10\r\n")
    assert framer.next_event().text == "+QIRD: 10"
    framer.expect_payload(10)
    assert framer.payload_missing == 10
    framer.feed(b"0123")
    assert framer.next_event() is None and framer.payload_missing == 6
    framer.feed(b"456789\r\nOK\r\n")
    assert framer.next_event().data == b"0123456789"
    assert framer.payload_missing == 0
