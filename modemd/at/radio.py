"""Sans-IO: the radio read-outs (AT+CSQ, AT+QCSQ, AT+QENG, AT+COPS?) as typed values.

Each family prints signal quality its own way, and the field order differs per RAT: BG96/BG95
AT+QCSQ gives `<rssi>,<rsrp>,<sinr>,<rsrq>` on LTE (SINR second to last, in 1/5 dB from -20 dB),
RG50xQ `"NR5G",<rsrp>,<sinr>,<rsrq>`, RGx00U AT+QENG="servingcell" `...,<RSRP>,<RSRQ>,<RSSI>,<SINR>`
on LTE but `...,<RSRP>,<RSRQ>,<SINR>` on NR5G-SA and `<RSRP>,<SINR>,<RSRQ>` on its NR5G-NSA line,
BC25 AT+QENG=0 `0,<earfcn>,<offset>,<pci>,<cellid>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,...`. Parsing is
positional per sysmode; a value the module leaves empty or out of range is None, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .urc import after_prefix, split_fields

#: Registration report kinds to their domain (the `domain` label of modemd_registration_state).
REGISTRATION_DOMAINS: dict[str, str] = {"CREG": "cs", "CGREG": "ps", "CEREG": "eps", "C5GREG": "5gs"}

#: 27.007 +COPS <AcT> to a short technology name (the info metric's `act` label).
ACCESS_TECHNOLOGIES: dict[int, str] = {
    0: "GSM", 1: "GSM Compact", 2: "UTRAN", 3: "EGPRS", 4: "HSDPA", 5: "HSUPA", 6: "HSPA",
    7: "LTE", 8: "LTE-M", 9: "NB-IoT", 10: "LTE-5GC", 11: "NR-5GC", 12: "NG-RAN", 13: "EN-DC",
}


@dataclass(frozen=True, slots=True)
class Quality:
    """One extended signal read-out: the serving RAT and its values (dBm / dB)."""

    sysmode: str = ""
    rssi_dbm: float | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None


@dataclass(frozen=True, slots=True)
class Operator:
    """AT+COPS? `<mode>[,<format>,<oper>[,<AcT>]]`; `+COPS: 0` alone while searching (C5)."""

    mode: int | None = None
    name: str = ""
    numeric: str = ""
    act: int | None = None

    @property
    def technology(self) -> str:
        return ACCESS_TECHNOLOGIES.get(self.act, "") if self.act is not None else ""


def _num(field: str, lo: float, hi: float) -> float | None:
    try:
        value = float(field)
    except ValueError:
        return None
    return value if lo <= value <= hi else None


def _rssi(f: str) -> float | None:
    return _num(f, -125, -25)


def _rsrp(f: str) -> float | None:
    return _num(f, -156, -31)


def _rsrq(f: str) -> float | None:
    return _num(f, -43, 20)


def _sinr_db(f: str) -> float | None:
    return _num(f, -23, 40)


def _sinr_fifth(f: str) -> float | None:
    """BG96/BG95/EC2x QCSQ <lte_sinr>: 0..250 in 1/5 dB, i.e. -20..+30 dB."""
    raw = _num(f, 0, 250)
    return None if raw is None else (raw - 100.0) / 5.0


def _at(f: list[str], i: int) -> str:
    return f[i] if len(f) > i else ""


def parse_csq(line: str) -> tuple[int | None, int | None]:
    """`+CSQ: <rssi>,<ber>` -> (rssi 0..31, ber 0..7); 99 (unknown) -> None."""
    f = split_fields(after_prefix(line))
    rssi, ber = _num(_at(f, 0), 0, 31), _num(_at(f, 1), 0, 7)
    return (None if rssi is None else int(rssi)), (None if ber is None else int(ber))


def csq_to_dbm(csq: int | None) -> float | None:
    """27.007 <rssi>: 0 -> -113 dBm, 1 -> -111, ... 31 -> -51 dBm; None (99) stays None."""
    return None if csq is None or not 0 <= csq <= 31 else -113.0 + 2.0 * csq


def parse_qcsq(line: str) -> Quality:
    """`+QCSQ: <sysmode>[,<value1>...]` (BG96, BG95, EC2x, RG50xQ)."""
    f = split_fields(after_prefix(line))
    mode = f[0].upper()
    if mode in ("CAT-M1", "CAT-NB1", "EMTC", "NBIOT", "LTE"):
        return Quality(f[0], _rssi(_at(f, 1)), _rsrp(_at(f, 2)), _rsrq(_at(f, 4)),
                       _sinr_fifth(_at(f, 3)))
    if mode == "NR5G":
        return Quality(f[0], None, _rsrp(_at(f, 1)), _rsrq(_at(f, 3)), _sinr_db(_at(f, 2)))
    if mode in ("GSM", "WCDMA", "TDSCDMA", "CDMA", "HDR"):
        return Quality(f[0], _rssi(_at(f, 1)))
    return Quality(f[0])  # "NOSERVICE"


def parse_qeng_servingcell(lines: list[str]) -> Quality:
    """AT+QENG="servingcell" (RGx00U): one line on LTE / NR5G-SA, three on NR5G-NSA (the
    NR5G-NSA line's values win: that carrier moves the data)."""
    quality = Quality()
    for line in lines:
        f = split_fields(after_prefix(line))
        if f and f[0] == "servingcell":
            f = f[2:]  # "servingcell",<state>,<rat>,...
        if not f:
            continue
        rat = f[0]
        if rat == "LTE":
            quality = Quality("LTE", _rssi(_at(f, 13)), _rsrp(_at(f, 11)), _rsrq(_at(f, 12)),
                              _sinr_db(_at(f, 14)))
        elif rat == "NR5G-SA":
            quality = Quality("NR5G-SA", None, _rsrp(_at(f, 10)), _rsrq(_at(f, 11)),
                              _sinr_db(_at(f, 12)))
        elif rat == "NR5G-NSA":
            quality = Quality("NR5G-NSA", quality.rssi_dbm, _rsrp(_at(f, 4)), _rsrq(_at(f, 6)),
                              _sinr_db(_at(f, 5)))
        elif rat in ("WCDMA", "GSM"):
            quality = Quality(rat)
    return quality


def parse_qeng0(line: str) -> Quality:
    """BC25 `+QENG: 0,<earfcn>,<offset>,<pci>,<cellid>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,...`."""
    f = split_fields(after_prefix(line))
    if _at(f, 0) != "0":
        return Quality()
    return Quality("NBIoT", _rssi(_at(f, 7)), _rsrp(_at(f, 5)), _rsrq(_at(f, 6)),
                   _sinr_db(_at(f, 8)))


def parse_cops(line: str) -> Operator:
    """`+COPS: <mode>[,<format>,"<oper>"[,<AcT>]]`: format 2 is the numeric MCC+MNC."""
    f = split_fields(after_prefix(line))
    mode = _num(_at(f, 0), 0, 4)
    if len(f) < 3:
        return Operator(None if mode is None else int(mode))
    act = _num(_at(f, 3), 0, 13)
    name, numeric = (f[2], "") if f[1] != "2" else ("", f[2])
    return Operator(None if mode is None else int(mode), name, numeric,
                    None if act is None else int(act))
