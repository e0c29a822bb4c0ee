"""The time stamp of an NTP answer: `+QNTP: 0,"2026/07/02,14:27:52+32"` (BC25: `+QNTTP:`).

The manuals give the 3GPP TS 27.007 +CCLK shape (S5 §2.3.12, 96 §2.1.12): date, time, then a zone in
quarters of an hour (+32: UTC+8), and 27.007 reads the time as local. A real EC200U prints UTC there
(real-modules corpus S21: at 22:27:52 in UTC+8 it printed `14:27:52+32`), so the time is taken as
UTC and the zone is reported beside it, as the module's idea of the local offset. Sans-IO.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

_STAMP = re.compile(r'"?(\d{4})/(\d{1,2})/(\d{1,2}),(\d{1,2}):(\d{2}):(\d{2})([+-]\d{1,2})?"?')


@dataclass(frozen=True, slots=True)
class NtpTime:
    utc: _dt.datetime      # aware, UTC
    zone_minutes: int      # the module's zone field, in minutes east of UTC

    @property
    def iso(self) -> str:
        """ISO 8601 in UTC, as `date -s` and most tools read it: 2026-07-02T14:27:52Z."""
        return self.utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def ntp_time(text: str) -> NtpTime:
    """The instant an NTP answer names; ValueError (showing `text`) when it is not one."""
    m = _STAMP.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a time stamp: {text!r}")
    quarters = int(m.group(7) or 0)
    if not -96 <= quarters <= 96:
        raise ValueError(f"time zone out of range: {text!r}")
    try:
        utc = _dt.datetime(*(int(x) for x in m.groups()[:6]), tzinfo=_dt.timezone.utc)
    except ValueError:
        raise ValueError(f"not a valid date and time: {text!r}") from None
    return NtpTime(utc, 15 * quarters)
