"""The read pacer (modemd/at/pacer.py): waits inside a payload for as long as its rest needs, and
between frames only while the line streams with nothing in flight, at the rate measured over the
busy period; never slows a port that is faster than it measured."""

from __future__ import annotations

import pytest

from modemd.at.framer import Framer
from modemd.at.pacer import BEHIND, LINGER_BYTES, MAX_WAIT, MIN_MISSING, ReadPacer


def test_a_small_rest_is_never_waited_for():
    """A small message must not wait for a timer (it wakes up to 1 ms late)."""
    pacer = ReadPacer()
    pacer.after_read(0.0, 0, 5000)
    pacer.after_read(0.1, 100, 5000)                         # 1,000 B/s: a slow line
    assert pacer.after_read(0.2, 100, MIN_MISSING - 1) == 0.0
    assert pacer.after_read(0.3, 100, MIN_MISSING) > 0


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


def test_a_wait_is_capped_and_a_faster_busy_period_raises_the_estimate_at_once():
    pacer = ReadPacer()
    pacer.after_read(0.0, 10, 100_000)
    assert pacer.after_read(1.0, 10, 100_000) == MAX_WAIT   # 10 B/s: capped
    pacer.after_read(1.5, 10, 0)                             # payload complete: period over
    pacer.after_read(2.0, 10, 100_000)
    pacer.after_read(2.05, 5_000_000, 100_000)               # USB speed: 100 MB/s measured
    assert pacer.rate == pytest.approx(100e6)
    assert pacer.after_read(2.06, 1000, 1000) == 0.0         # 10 us: not worth a timer


def test_a_slower_busy_period_lowers_the_estimate_only_gradually():
    pacer = ReadPacer()
    pacer.after_read(0.0, 0, 1000)
    pacer.after_read(0.01, 1000, 1000)                       # 100,000 B/s over 10 ms
    pacer.after_read(0.02, 1000, 0)                          # period over
    pacer.after_read(1.0, 0, 1000)
    pacer.after_read(1.02, 200, 1000)                        # 10,000 B/s over 20 ms
    assert pacer.rate == pytest.approx(0.75 * 100_000 + 0.25 * 10_000)


def test_bursts_do_not_inflate_the_rate():
    """The tty hands bytes over in bursts: two bursts 1.7 ms apart are not a 270 kB/s line."""
    pacer = ReadPacer()
    pacer.after_read(0.0, 460, 4000)
    pacer.after_read(0.005, 460, 3540)                      # a first estimate: 92,000 B/s
    pacer.after_read(0.0067, 460, 3080)                     # a burst that came late-then-quick
    pacer.after_read(0.015, 460, 2620)
    pacer.after_read(0.020, 460, 2160)
    assert pacer.rate == pytest.approx(1840 / 0.020)


def test_a_read_that_ends_the_payload_ends_the_busy_period():
    pacer = ReadPacer()
    pacer.after_read(0.0, 0, 1000)
    pacer.after_read(0.01, 1000, 0)                          # the payload is complete
    rate = pacer.rate
    wait = pacer.after_read(5.0, 10, 900)  # after an idle gap: no sample, the old estimate holds
    assert pacer.rate == rate == pytest.approx(100_000)
    assert wait == pytest.approx(900 / 100_000)


def _streaming(pacer: ReadPacer) -> float:
    """A 921600-baud direct-push stream: 1528-byte frames read in two parts; returns the time."""
    pacer.after_read(0.0, 460, 1068)
    pacer.after_read(0.0116, 1068, 0, idle=True)            # ends frame 1
    pacer.after_read(0.0166, 460, 1068)
    return 0.0282


def test_a_saturated_line_with_nothing_in_flight_is_read_once_a_frame():
    pacer = ReadPacer()
    now = _streaming(pacer)
    wait = pacer.after_read(now, 1068, 0, idle=True)         # frame 2 complete, line still busy
    assert wait == pytest.approx(LINGER_BYTES / pacer.rate)  # about two frames
    assert 0.030 < wait < 0.036 and pacer.lingers == 2  # after frame 1 too
    # the next read holds the next two frames; the line still streams: wait again
    assert pacer.after_read(now + wait, 3056, 0, idle=True) == pytest.approx(wait, rel=0.05)


def test_a_stream_of_small_frames_is_read_two_frames_worth_at_a_time():
    """The wait is about bytes, not frames: a saturated line of 100-byte pushes is read about
    LINGER_BYTES at a time too, and a read that held more than that never waits."""
    pacer = ReadPacer()
    now = _streaming(pacer)  # the rate is known from a payload read in parts
    now += 1068 / pacer.rate
    wait = pacer.after_read(now, 1068, 0, idle=True)
    rate = pacer.rate
    for _ in range(3):  # then 128-byte frames, back to back
        now += 128 / rate
        wait = pacer.after_read(now, 128, 0, idle=True)
        assert wait == pytest.approx(LINGER_BYTES / pacer.rate)
    assert pacer.after_read(now + wait, BEHIND + 1, 0, idle=True) == 0.0
    assert LINGER_BYTES < BEHIND < 4096  # below what one read of an N_TTY line can return


def test_no_wait_between_frames_with_a_command_in_flight_or_behind_or_after_a_pause():
    pacer = ReadPacer()
    now = _streaming(pacer)
    assert pacer.after_read(now, 1068, 0, idle=False) == 0.0   # its answer must not wait
    pacer = ReadPacer()
    now = _streaming(pacer)
    assert pacer.after_read(now, BEHIND + 1, 0, idle=True) == 0.0   # several frames: behind
    pacer = ReadPacer()
    now = _streaming(pacer)
    assert pacer.after_read(now + 1.0, 1068, 0, idle=True) == 0.0   # the line paused


def test_a_wait_that_found_nothing_ends_the_busy_period():
    pacer = ReadPacer()
    now = _streaming(pacer)
    wait = pacer.after_read(now, 1068, 0, idle=True)
    rate = pacer.rate
    pacer.nothing_read()                                     # the stream had ended
    pacer.after_read(now + 10.0, 64, 0, idle=True)           # a small frame much later
    assert pacer.rate == rate and wait > 0


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


def test_a_stream_read_in_the_middle_of_a_frame_waits_for_two_frames_worth_not_the_rest():
    """A stream's read ends anywhere in a frame: while streaming to an idle channel the wait
    covers the payload's rest and the frames behind it (about LINGER_BYTES a wake-up); with a
    command in flight only the rest is waited for (its answer comes right after the payload)."""
    pacer = ReadPacer()
    now = _streaming(pacer)
    wait = pacer.after_read(now, 1068, 0, idle=True)          # streaming: a linger
    rate = pacer.rate
    now += wait
    lingers = pacer.lingers
    wait = pacer.after_read(now, LINGER_BYTES, 1000, idle=True)  # ends 1000 bytes into a payload
    assert wait == pytest.approx(LINGER_BYTES / rate, rel=0.05) and pacer.lingers == lingers + 1
    pacer = ReadPacer()
    now = _streaming(pacer)
    now += pacer.after_read(now, 1068, 0, idle=True)
    wait = pacer.after_read(now, LINGER_BYTES, 1000, idle=False)  # a QIRD answer's payload
    assert wait == pytest.approx(1000 / pacer.rate, rel=0.05)
