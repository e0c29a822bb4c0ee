"""The NTP answer's time stamp (at/clock.py), from what real modules printed."""

from __future__ import annotations

import datetime as dt

import pytest

from modemd.at.clock import ntp_time
from modemd.at.urc import NtpResult, parse_urc


def test_the_ec200u_answer_is_utc_with_its_zone_beside_it():
    """Corpus S21: the EC200U's log clock (UTC+8) read 22:27:52 when it printed 14:27:52+32."""
    urc = parse_urc('+QNTP: 0,"2026/07/02,14:27:52+32"')
    assert urc == NtpResult(0, "2026/07/02,14:27:52+32")
    stamp = ntp_time(urc.time)
    assert stamp.iso == "2026-07-02T14:27:52Z"
    assert stamp.zone_minutes == 8 * 60
    local = stamp.utc.astimezone(dt.timezone(dt.timedelta(minutes=stamp.zone_minutes)))
    assert local.strftime("%H:%M:%S") == "22:27:52"


@pytest.mark.parametrize("text, iso, zone", [
    ('"2013/08/19,11:10:10+32"', "2013-08-19T11:10:10Z", 480),  # the manuals' example, quoted
    ("2026/01/05,03:04:05-20", "2026-01-05T03:04:05Z", -300),
    ("2026/12/31,23:59:59", "2026-12-31T23:59:59Z", 0),          # no zone field
    ("2026/7/2,4:27:52+0", "2026-07-02T04:27:52Z", 0),
])
def test_shapes(text, iso, zone):
    stamp = ntp_time(text)
    assert (stamp.iso, stamp.zone_minutes) == (iso, zone)


@pytest.mark.parametrize("text", [
    "", "ERROR", "24/01/18,08:58:19+28",  # +CCLK's two-digit year is not an NTP answer
    "2026/13/02,14:27:52+00", "2026/02/30,14:27:52+00", "2026/07/02,24:00:00+00",
    "2026/07/02,14:27:52+97", "2026/07/02,14:27:52+32 trailing",
])
def test_what_is_not_a_time_stamp_is_refused_with_the_text_shown(text):
    with pytest.raises(ValueError) as info:
        ntp_time(text)
    assert repr(text) in str(info.value)
