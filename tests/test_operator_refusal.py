"""`modemctl at` refuses what would take the line, the sockets or the contexts from modemd
(at/commands.py operator_refusal): one line saying why; read and test forms always pass."""

from __future__ import annotations

import pytest

from modemd.at.commands import operator_refusal


@pytest.mark.parametrize("text", [
    "AT", "ATI", "ATI3", "ATE0", "ATE", "ATV1", "ATQ0", "ATE0Q0V1", "AT&W", "AT&D2", "ATS0=0",
    "ATS7?", "AT+CSQ", "at+csq", "AT+CSQ;+CREG?", "AT+QIACT?", "AT+QIACT=?", "AT+QIRD=?",
    "AT+QISEND=?", "AT+IPR?", "AT+CMEE=1", "AT+CMEE?", "AT+QISDE=0", 'AT+QICFG="viewmode"',
    'AT+QICFG="dataformat",0,0', 'AT+QICFG="transpktsize",1460', "AT+QPOWD=1", "AT+CFUN=1,1",
    "AT+COPS=?", "AT$QCPWRDN", "AT^SYSINFO",
])
def test_what_leaves_modemd_in_charge_passes(text):
    assert operator_refusal(text) is None


@pytest.mark.parametrize("text, why", [
    ("AT+QISEND=0,5", "AT+QISEND: data commands (QISEND/QIRD) would steal socket data"),
    ("AT+QIRD=0,1500", "AT+QIRD: data commands (QISEND/QIRD) would steal socket data"),
    ("at+qird=0,0", "AT+QIRD: data commands (QISEND/QIRD) would steal socket data"),
    ('AT+QIOPEN=1,0,"TCP","example.com",80', "AT+QIOPEN: modemd owns the module's sockets: "
                                              "open connections through a [[forward]] or SOCKS5"),
    ("AT+QICLOSE=0", "AT+QICLOSE: modemd owns the module's sockets: a connection closes when "
                     "its local client closes it"),
    ("AT+QISWTMD=0,2", "AT+QISWTMD: modemd owns the module's sockets: it keeps every "
                       "connection in direct push mode"),
    ("AT+QIDEACT=1", "AT+QIDEACT: modemd keeps the PDP contexts up: use `modemctl reconnect`"),
    ("AT+CGACT=0,1", "AT+CGACT: modemd keeps the PDP contexts up: use `modemctl reconnect`"),
    ("AT+IPR=9600", "AT+IPR: the port's baud rate is [modem] baudrate: change it there, "
                    "with the module's"),
    ("AT+CSQ;+IPR=9600", "AT+IPR: the port's baud rate is [modem] baudrate"),  # 2nd command
    ("AT+IFC=2,2", "AT+IFC: flow control is [modem] rtscts"),
    ("AT+CMEE=2", "AT+CMEE=2: modemd keeps AT+CMEE=1 (it reads the module's answers that way)"),
    ("AT+QISDE=1", "AT+QISDE=1: modemd keeps AT+QISDE=0"),
    ('AT+QICFG="viewmode",1', 'AT+QICFG="VIEWMODE",1: modemd reads received data in the '
                              "default framing"),
    ('AT+QICFG="dataformat",0,1', 'AT+QICFG="DATAFORMAT",0,1: modemd reads received data'),
    ("ATE1", "ATE1: echo would make modemd take every answer for a restarted module"),
    ("ATE0V0", "ATV0: numeric result codes: modemd reads the verbose ones"),
    ("ATV", "ATV: numeric result codes"),  # no number: 0
    ("ATQ1", "ATQ1: result codes would be suppressed: every command would time out"),
    ("ATZ", "ATZ: a settings reset takes modemd's settings away: use `modemctl reboot`"),
    ("AT&F0", "AT&F0: a settings reset takes modemd's settings away"),
    ("ATO", "ATO: data mode would take the line from modemd"),
    ("ATD*99#", "ATD: dialling would take the line from modemd"),
    ("ATS3=13E1", "ATE1: echo would make modemd"),
])
def test_what_would_take_the_line_or_the_sockets_is_refused_in_one_line(text, why):
    refusal = operator_refusal(text)
    assert refusal is not None and refusal.startswith(why) and refusal.endswith("; not allowed")
    assert "\n" not in refusal
