"""Sans-IO radio parsing: registration lines with every field count, each family's signal read-out.

The registration builder here is written from 27.007 on its own (not the emulator's): a read
response is `<n>,` + the URC's fields; the URC's fields depend on the kind, <n> and <stat>.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modemd.at.radio import (
    csq_to_dbm,
    parse_cops,
    parse_csq,
    parse_qcsq,
    parse_qeng0,
    parse_qeng_servingcell,
)
from modemd.at.urc import Registration, parse_registration, parse_urc

MAX_N = {"CREG": 3, "CGREG": 4, "CEREG": 5, "C5GREG": 2}


def urc_fields(kind: str, n: int, stat: int, lac: str, ci: str, act: int | None) -> list[str]:
    """27.007: +CREG <stat>[,[<lac>],[<ci>],[<AcT>][,<cause_type>,<reject_cause>]];
    +CGREG adds <rac>, n=4 the PSM timers (+GPRS READY); +C5GREG the NSSAI fields. A 2G-only
    module leaves <AcT> out of +CREG (act None)."""
    if n < 2:
        return [str(stat)]
    if act is None:
        return [str(stat), f'"{lac}"', f'"{ci}"']
    out = [str(stat), f'"{lac}"', f'"{ci}"', str(act)]
    if kind == "CGREG":
        out.append('"A1"')
    if kind == "C5GREG":
        return out + ["1", '"01"']
    if n >= 3:
        out += ["", "" if stat != 3 else "15"]
    if n >= 4:
        out += ['"00100100"', '"01000111"'] + (['"00000000"'] if kind == "CGREG" else [])
    return out


registrations = st.tuples(
    st.sampled_from(sorted(MAX_N)), st.integers(0, 5), st.sampled_from([0, 1, 2, 3, 4, 5]),
    st.text("0123456789ABCDEF", min_size=1, max_size=4),
    st.text("0123456789ABCDEF", min_size=1, max_size=9),
    st.sampled_from([None, 0, 2, 7, 8, 9, 11, 13]),
).filter(lambda t: t[1] <= MAX_N[t[0]] and (t[5] is not None or (t[0] == "CREG" and t[1] == 2)))


@given(registrations)
def test_every_registration_shape_gives_its_stat_as_urc_and_as_read_response(reg):
    kind, n, stat, lac, ci, act = reg
    fields = urc_fields(kind, n, stat, lac, ci, act)
    urc = parse_urc(f"+{kind}: {','.join(fields)}")
    assert isinstance(urc, Registration)
    assert (urc.kind, urc.stat, urc.n, urc.fields) == (kind, stat, None, len(fields))
    read_line = f"+{kind}: {n},{','.join(fields)}"
    for read in (parse_registration(read_line, response=True), parse_urc(read_line)):
        assert (read.kind, read.stat, read.n, read.fields) == (kind, stat, n, len(fields) + 1)
    if n >= 2:
        assert (urc.area, urc.ci, urc.act) == (lac, ci, act) == (read.area, read.ci, read.act)
        assert urc.registered == (stat in (1, 5))


def test_field_counts_1_to_11_are_all_covered():
    """The shapes above: URCs of 1 to 10 fields, read responses of 2 to 11."""
    urcs = {len(urc_fields(k, n, 1, "1", "2", 7)) for k in MAX_N for n in range(MAX_N[k] + 1)}
    urcs.add(len(urc_fields("CREG", 2, 1, "1", "2", None)))
    assert urcs | {u + 1 for u in urcs} == set(range(1, 12))


@pytest.mark.parametrize("line,response,stat,n", [
    # line-shapes C1-C4: the read reply printed unsolicited must not read <n> as <stat>
    ("+CGREG: 0,4", False, 4, 0), ("+CEREG: 2,0", False, 0, 2), ("+CGREG: 4,4", False, 4, 4),
    ('+CGREG: 4,5,"66C0","1042","0",,,,"00000000","01100000","00000000"', False, 5, 4),
    ('+CREG: 2,1,"00A8","5355E8D",7', False, 1, 2),
    # a URC with only a stat, and a one-field answer to our query
    ("+CEREG: 5", False, 5, None), ("+CEREG: 1,,,7", False, 1, None),
    ("+CEREG: 0,1", True, 1, 0), ("+C5GREG: 2,", True, None, 2),
    # a URC claimed by our AT+CEREG? (same prefix, printed just before the answer)
    ("+CEREG: 3", True, 3, None),
])
def test_real_registration_lines(line, response, stat, n):
    reg = parse_registration(line, response=response)
    assert (reg.stat, reg.n) == (stat, n)


# -- signal read-outs -----------------------------------------------------------------------------
def test_csq_and_unknown():
    assert parse_csq("+CSQ: 20,99") == (20, None)
    assert parse_csq("+CSQ: 99,99") == (None, None)
    assert [csq_to_dbm(x) for x in (0, 31, None)] == [-113, -51, None]


@pytest.mark.parametrize("line,expect", [
    # BG96 / BG95 / EC2x: <rssi>,<rsrp>,<sinr>,<rsrq>, SINR in 1/5 dB from -20 dB
    ('+QCSQ: "CAT-M1",-65,-92,160,-10', ("CAT-M1", -65, -92, -10, 12.0)),
    ('+QCSQ: "eMTC",-79,-101,137,-13', ("eMTC", -79, -101, -13, 7.4)),
    ('+QCSQ: "CAT-NB1",-70,-110,0,-20', ("CAT-NB1", -70, -110, -20, -20.0)),
    ('+QCSQ: "LTE",-60,-85,250,-7', ("LTE", -60, -85, -7, 30.0)),
    ('+QCSQ: "NR5G",-68,38,-11', ("NR5G", None, -68, -11, 38.0)),   # corpus S20 (RM510Q)
    ('+QCSQ: "WCDMA",-70,-80,-5', ("WCDMA", -70, None, None, None)),
    ('+QCSQ: "GSM",-77', ("GSM", -77, None, None, None)),
    ('+QCSQ: "NOSERVICE"', ("NOSERVICE", None, None, None, None)),
])
def test_qcsq_per_sysmode(line, expect):
    q = parse_qcsq(line)
    assert (q.sysmode, q.rssi_dbm, q.rsrp_dbm, q.rsrq_db, q.sinr_db) == expect


def test_qeng_servingcell_lte_sa_nsa():
    lte = parse_qeng_servingcell([
        '+QENG: "servingcell","NOCONN","LTE","FDD",262,01,1A2B3C4,123,1300,3,5,5,1A2B,'
        '-97,-11,-68,14,12,-,40'])
    assert (lte.sysmode, lte.rsrp_dbm, lte.rsrq_db, lte.rssi_dbm, lte.sinr_db) == (
        "LTE", -97, -11, -68, 14)
    sa = parse_qeng_servingcell([
        '+QENG: "servingcell","NOCONN","NR5G-SA","TDD",460,01,1F9E8C002,505,1003D6,504990,41,12,'
        '-78,-11,18,1,-'])
    assert (sa.sysmode, sa.rsrp_dbm, sa.rsrq_db, sa.sinr_db) == ("NR5G-SA", -78, -11, 18)
    nsa = parse_qeng_servingcell([
        '+QENG: "servingcell","NOCONN"',
        '+QENG: "LTE","FDD",262,01,1A2B3C4,123,1300,3,5,5,1A2B,-97,-11,-68,14,12,-,40',
        '+QENG: "NR5G-NSA",262,01,505,-84,21,-12,627264,78,12,1'])
    # the NR5G-NSA line is <RSRP>,<SINR>,<RSRQ>; the RSSI comes from the LTE anchor
    assert (nsa.sysmode, nsa.rsrp_dbm, nsa.sinr_db, nsa.rsrq_db, nsa.rssi_dbm) == (
        "NR5G-NSA", -84, 21, -12, -68)
    assert parse_qeng_servingcell(['+QENG: "servingcell","SEARCH"']).rsrp_dbm is None


def test_qeng0_bc25():
    q = parse_qeng0('+QENG: 0,2506,2,80,"6A6D4C2",-72,-11,-61,22,5,"5AF0",0,21,3')
    assert (q.rsrp_dbm, q.rsrq_db, q.rssi_dbm, q.sinr_db) == (-72, -11, -61, 22)
    assert parse_qeng0("+QENG: 0,,,,,,,,,,,,,").rsrp_dbm is None


@pytest.mark.parametrize("line,name,numeric,act,tech", [
    ('+COPS: 0,0,"AT&T 4G",8', "AT&T 4G", "", 8, "LTE-M"),           # C6
    ('+COPS: 0,2,"26803",7', "", "26803", 7, "LTE"),
    ("+COPS: 0", "", "", None, ""),                                   # C5: searching
])
def test_cops(line, name, numeric, act, tech):
    op = parse_cops(line)
    assert (op.name, op.numeric, op.act, op.technology) == (name, numeric, act, tech)
