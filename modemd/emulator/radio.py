"""The emulated radio: signal values, operator, and network registration as the module prints them.

Values live on the Emulator (they survive reboots, like the network around a real module) and are
set from tests (`emu.radio.set(...)`, `emu.lose_registration()`) or the control socket (`radio ...`,
`registration lose|regain ...`). Every read-out is formatted in its family's own field order:

- AT+CSQ `<rssi>,<ber>` (27.007 §8.5).
- AT+QCSQ (BG96 "CAT-M1"/"CAT-NB1", BG95 "eMTC"/"NBIoT", UMTS "WCDMA"):
  LTE-class `<rssi>,<rsrp>,<sinr>,<rsrq>` with <sinr> in 1/5 dB from -20 dB (0..250);
  "WCDMA" `<rssi>,<rscp>,<ecio>`; "GSM" `<rssi>`; "NOSERVICE" alone.
- AT+QENG="servingcell" (RGx00U): "LTE" `...,<TAC>,<RSRP>,<RSRQ>,<RSSI>,<SINR>,...`,
  "NR5G-SA" `...,<band>,<bw>,<RSRP>,<RSRQ>,<SINR>,...`.
- AT+QENG=0 (BC25): `0,<earfcn>,<offset>,<pci>,"<cellid>",<RSRP>,<RSRQ>,<RSSI>,<SINR>,<band>,...`.
- AT+COPS? `<mode>,<format>,"<oper>",<AcT>` (format 0 long name, 2 numeric; `+COPS: 0` unregistered).
- +CREG/+CGREG/+CEREG/+C5GREG (27.007 §7.2, §10.1.20, §10.1.22, §10.1.x): <n> 0..5 as each
  command allows; the location fields only while registered (line-shapes C1/C2); n=3 adds the
  (empty) cause fields, n=4/5 the PSM timers: 1 to 10 fields in a URC, 2 to 11 in a read reply.

This module never imports modemd.at: its formats are written from the manuals on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

REG_MAX_N = {"+CREG": 3, "+CGREG": 4, "+CEREG": 5, "+C5GREG": 2}
REGISTERED = (1, 5)


@dataclass
class RadioConditions:
    """What the network around the module looks like now (settable at any time)."""

    csq: int = 24          # 0..31, 99 unknown
    ber: int = 99          # 0..7, 99 unknown
    rsrp: int = -92        # dBm
    rsrq: int = -10        # dB
    sinr: float = 12.0     # dB
    rat: str = ""          # the serving RAT the read-outs name ("" = the family's own)
    operator: str = "EMULATED"
    numeric: str = "00101"
    act: int | None = None  # +COPS <AcT> (None = the family's)
    stat: int = 1           # registration <stat> while registered: 1 home, 5 roaming
    tac: str = "1A2B"
    ci: str = "01A2B3C4"
    # after registration is lost: the network deactivates the PDP context after this many seconds
    # (+QIURC: "pdpdeact" where the family reports it), or never (None: the context stays)
    pdpdeact_after: float | None = None

    _FIELDS = ("csq", "ber", "rsrp", "rsrq", "sinr", "rat", "operator", "numeric", "act", "stat",
               "tac", "ci", "pdpdeact_after")

    def set(self, **values) -> None:
        for key, value in values.items():
            if key not in self._FIELDS:
                raise ValueError(f"unknown radio value {key!r} (one of {', '.join(self._FIELDS)})")
            setattr(self, key, value)

    @staticmethod
    def parse_words(pairs: list[str]) -> dict:
        """`key=value` words from the control socket (an operator's spaces written as _)."""
        values: dict = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            if not sep:
                raise ValueError(f"expected key=value, got {pair!r}")
            if key in ("rat", "operator", "numeric", "tac", "ci"):
                values[key] = text.replace("_", " ") if key == "operator" else text
            elif key == "sinr":
                values[key] = float(text)
            elif key == "pdpdeact_after":
                values[key] = None if text in ("never", "none", "off") else float(text)
            elif key == "act":
                values[key] = None if text == "auto" else int(text)
            else:
                values[key] = int(text)
        return values

    @property
    def rssi_dbm(self) -> int:
        return -113 + 2 * self.csq if 0 <= self.csq <= 31 else -113


def cops_act(radio: RadioConditions, family_act: int) -> int:
    return family_act if radio.act is None else radio.act


def reg_act(radio: RadioConditions, family_act: int) -> int:
    return cops_act(radio, family_act)


def csq_line(radio: RadioConditions, registered: bool) -> str:
    return f"+CSQ: {radio.csq},{radio.ber}" if registered else "+CSQ: 99,99"


def qcsq_line(radio: RadioConditions, sysmode: str, registered: bool) -> str:
    mode = radio.rat or sysmode
    if not registered:
        return '+QCSQ: "NOSERVICE"'
    if mode in ("GSM",):
        return f'+QCSQ: "{mode}",{radio.rssi_dbm}'
    if mode in ("WCDMA", "TDSCDMA"):
        return f'+QCSQ: "{mode}",{radio.rssi_dbm},{radio.rsrp},{radio.rsrq}'
    sinr = max(0, min(250, round((radio.sinr + 20.0) * 5)))
    # LTE class: <rssi>,<rsrp>,<sinr>,<rsrq> -- SINR before RSRQ, in 1/5 dB
    return f'+QCSQ: "{mode}",{radio.rssi_dbm},{radio.rsrp},{sinr},{radio.rsrq}'


def qeng_servingcell_lines(radio: RadioConditions, registered: bool) -> list[str]:
    state = '"NOCONN"' if registered else '"SEARCH"'
    rat = radio.rat or "NR5G-SA"
    if not registered:
        return [f'+QENG: "servingcell",{state}']
    sinr = round(radio.sinr)
    if rat == "LTE":
        # "LTE",<is_tdd>,<MCC>,<MNC>,<cellID>,<PCID>,<earfcn>,<band>,<UL_bw>,<DL_bw>,<TAC>,
        # <RSRP>,<RSRQ>,<RSSI>,<SINR>,<CQI>,<tx_power>,<srxlev>
        return [f'+QENG: "servingcell",{state},"LTE","FDD",001,01,{radio.ci},123,1300,3,5,5,'
                f'{radio.tac},{radio.rsrp},{radio.rsrq},{radio.rssi_dbm},{sinr},12,-,40']
    # "NR5G-SA",<duplex>,<MCC>,<MNC>,<cellID>,<PCID>,<TAC>,<ARFCN>,<band>,<bw>,<RSRP>,<RSRQ>,
    # <SINR>,<scs>,<srxlev>
    return [f'+QENG: "servingcell",{state},"NR5G-SA","TDD",001,01,{radio.ci},505,{radio.tac},'
            f'504990,41,12,{radio.rsrp},{radio.rsrq},{sinr},1,-']


def qeng0_line(radio: RadioConditions, registered: bool) -> str:
    if not registered:
        return "+QENG: 0,,,,,,,,,,,,,"
    sinr = round(radio.sinr)
    return (f'+QENG: 0,2506,2,80,"{radio.ci}",{radio.rsrp},{radio.rsrq},{radio.rssi_dbm},{sinr},'
            f'5,"{radio.tac}",0,21,3')


def cops_line(radio: RadioConditions, family_act: int, registered: bool, fmt: int) -> str:
    if not registered:
        return "+COPS: 0"
    oper = radio.numeric if fmt == 2 else radio.operator
    return f'+COPS: 0,{fmt},"{oper}",{cops_act(radio, family_act)}'


def reg_fields(name: str, n: int, stat: int, radio: RadioConditions, act: int) -> list[str]:
    """The fields after the prefix of a URC (the read reply puts <n> in front)."""
    fields = [str(stat)]
    if n < 2 or stat not in REGISTERED:
        return fields  # C1/C2: no location while not registered, whatever n
    fields += [f'"{radio.tac}"', f'"{radio.ci}"', str(act)]
    if name == "+CGREG":
        fields.append('"01"')                   # <rac>
    if name == "+C5GREG":
        fields += ["0", '""']                   # <Allowed_NSSAI_length>, <Allowed_NSSAI>
    if n >= 3 and name != "+C5GREG":
        fields += ["", ""]                      # <cause_type>, <reject_cause>: no reject
    if n >= 4:
        fields += ['"00000000"', '"01100000"']  # <Active-Time>, <Periodic-RAU/TAU>
        if name == "+CGREG":
            fields.append('"00000000"')         # <GPRS-READY-timer>
    return fields


def reg_urc(name: str, n: int, stat: int, radio: RadioConditions, act: int) -> str | None:
    if n == 0:
        return None
    return f"{name}: {','.join(reg_fields(name, n, stat, radio, act))}"


def reg_read(name: str, n: int, stat: int, radio: RadioConditions, act: int) -> str:
    return f"{name}: {n},{','.join(reg_fields(name, n, stat, radio, act))}"
