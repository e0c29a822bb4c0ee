"""Real-module noise on the module's output: unsolicited lines, fragmented writes, junk bytes.

Real modules print lines nobody asked for at any line boundary (boot leftovers, registration,
time zone, signal, GNSS, FOTA progress), their UART output reaches the host in pieces of a few
bytes, and the line picks up junk. `Noise` holds those knobs and one seeded random generator per
kind, so a run is reproducible for a given seed and a given order of output.

The unsolicited lines are the shapes of docs/real-modules/line-shapes.md a module prints on its
own (B3-B6, B9, B10, C1-C3, C8, C15, C16, +CTZE/+CTZV, +QIND "FOTA", +QGPSURC). None of them
changes what the module does: no "pdpdeact" (D9), no "closed", registration lines only with a
registered stat, so a host that understands them has nothing to do.
"""

from __future__ import annotations

import random

# Lines a real module prints unsolicited (line-shapes.md row in the comment). One place only.
REAL_URCS: tuple[str, ...] = (
    "+CFUN: 1",  # B3
    "+CPIN: READY",  # B4 (also the answer to AT+CPIN?)
    "+QUSIM: 1",  # B5
    "+QIND: SMS DONE",  # B6
    "+QIND: PB DONE",  # B6
    '+QGPSURC: "xtradataexpire",0,"2024/04/17,13:00:00"',  # B9
    '+QGPS: "firmware",0,0',  # B10
    "+CREG: 1",  # C1
    "+CGREG: 0,5",  # C1
    "+CEREG: 2,1",  # C1
    "+CGREG: 4,1",  # C2 (n=4, two fields)
    '+CGREG: 4,5,"66C0","1042","0",,,,"00000000","01100000","00000000"',  # C3
    '+QIND: "csq",27,99',  # C8
    '+QIND: "csq",24,99',  # C8
    '+QNTP: 0,"2026/07/02,14:27:52+32"',  # C15
    '+QNITZ: "80/01/06,00:00:14+22"',  # C16 (bogus date, no dst)
    '+QNITZ: "26/07/02,14:27:52+32,0"',  # C16
    '+CTZE: "+32",0,"2026/07/02,14:27:52"',  # +CTZE (AT+CTZR=2)
    '+CTZV: "+32"',  # +CTZV (AT+CTZR=1)
    '+QIND: "FOTA","DOWNLOADING", 37%',  # G10
)

JUNK = bytes(b for b in range(256) if b not in b"\r\n>")  # never a line end or a false prompt


class Noise:
    """The noise knobs of one emulator (Emulator.noise_*); all off by default."""

    def __init__(self, seed: int = 0) -> None:
        self.urc_every = 0  # one line boundary in N gets a REAL_URCS line (0: never)
        self.fragment: tuple[int, int] | None = None  # output written in pieces of lo..hi bytes
        self.garbage = 0  # junk bytes still to write at the next line boundary
        self.flip = 0  # next N boundaries: a REAL_URCS line with one byte replaced by junk
        self.glue = 0  # next N boundaries: two REAL_URCS lines printed as one (CR LF lost)
        self.send_fail_rate = 0.0  # this share of QISENDs answers SEND FAIL (data dropped)
        self.inserted = 0  # lines inserted so far (urc, flip and glue), for tests
        self.junk_written = 0  # garbage bytes written so far
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._lines = random.Random(f"lines-{seed}")
        self._pieces = random.Random(f"pieces-{seed}")
        self._junk = random.Random(f"junk-{seed}")
        self._sends = random.Random(f"sends-{seed}")

    def off(self) -> None:
        self.urc_every = 0
        self.fragment = None
        self.garbage = self.flip = self.glue = 0
        self.send_fail_rate = 0.0

    def describe(self) -> str:
        frag = f"{self.fragment[0]}-{self.fragment[1]}" if self.fragment else "off"
        return (
            f"urc={self.urc_every} fragment={frag} garbage={self.garbage} flip={self.flip} "
            f"glue={self.glue} sendfail={self.send_fail_rate * 100:g}% seed={self.seed} "
            f"inserted={self.inserted} junk={self.junk_written}"
        )

    @property
    def active(self) -> bool:
        return bool(self.urc_every or self.garbage or self.flip or self.glue)

    def send_fails(self) -> bool:
        """Draw for one QISEND: does it answer SEND FAIL?"""
        return bool(self.send_fail_rate) and self._sends.random() < self.send_fail_rate

    def _line(self) -> bytes:
        return self._lines.choice(REAL_URCS).encode("latin-1")

    def _junk_bytes(self, n: int) -> bytes:
        return bytes(self._junk.choice(JUNK) for _ in range(n))

    def at_boundary(self) -> bytes:
        """What goes on the line at a line boundary of the module's output (often b"")."""
        out = b""
        if self.garbage:
            junk = self._junk_bytes(self.garbage)
            self.junk_written += len(junk)
            self.garbage = 0
            out += junk
        if self.flip:
            self.flip -= 1
            line = bytearray(self._line())
            i = self._junk.randrange(1, len(line))
            line[i] = (line[i] ^ (1 << self._junk.randrange(8))) or 0xFF
            if line[i] in b"\r\n>":
                line[i] = 0xFF
            out += b"\r\n" + bytes(line) + b"\r\n"
            self.inserted += 1
        elif self.glue:
            self.glue -= 1
            out += b"\r\n" + self._line() + self._line() + b"\r\n"
            self.inserted += 1
        elif self.urc_every and self._lines.randrange(self.urc_every) == 0:
            out += b"\r\n" + self._line() + b"\r\n"
            self.inserted += 1
        return out

    def pieces(self, data: memoryview) -> list[memoryview]:
        """`data` cut into pieces of fragment lo..hi bytes (one piece when not fragmenting)."""
        if self.fragment is None:
            return [data]
        lo, hi = self.fragment
        out: list[memoryview] = []
        i = 0
        while i < len(data):
            n = self._pieces.randint(lo, hi)
            out.append(data[i : i + n])
            i += n
        return out


def parse_range(text: str) -> tuple[int, int]:
    """ "1-16" -> (1, 16); "8" -> (8, 8)."""
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        raise ValueError(f"expected <min>-<max> bytes, got {text!r}") from None
    check_range(lo, hi)
    return lo, hi


def check_range(lo: int, hi: int) -> None:
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"fragment sizes must be integers with 1 <= min <= max, got {lo}-{hi}")
