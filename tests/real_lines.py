"""Every line shape real Quectel modules were seen to print (../shared/docs/real-modules/line-shapes.md).

Test data shared by the tests (tests/test_real_lines.py) and the fuzz corpus (fuzz/make_corpus.py), so
the two never drift apart. Three kinds:

* LINES: (shape id, line text) for the example lines of sections B-G, without their CR LF;
* FINALS: the ones among them that end a command (a final result code), never unsolicited noise;
* STREAMS: section A, framing shapes, as whole exchanges: (shape id, command line, wire bytes, the
  final result the command must get, its information lines).

A line that is not a final result arriving at any line boundary must not change the answer of the
command in flight (unless it carries that command's own prefix), and when the daemon has no use for it
it is counted and logged at DEBUG only.
"""

from __future__ import annotations

LINES: list[tuple[str, str]] = [
    # B. boot / power
    ("B1", "RDY"),
    ("B2", "POWERED DOWN"),
    ("B3", "+CFUN: 1"),
    ("B3", "+CFUN: 4"),
    ("B4", "+CPIN: READY"),
    ("B5", "+QUSIM: 1"),
    ("B6", "+QIND: SMS DONE"),
    ("B6", "+QIND: PB DONE"),
    ("B7", "Call Ready"),
    ("B8", "+CME ERROR: 10"),
    ("B8", "+CME ERROR: 14"),
    ("B9", '+QGPSURC: "xtradataexpire",0,"2024/04/17,13:00:00"'),
    ("B10", '+QGPS: "firmware",0,0'),
    # C. registration / radio / time
    ("C1", "+CGREG: 0,4"),
    ("C1", "+CEREG: 2,4"),
    ("C1", "+CEREG: 2,0"),
    ("C1", "+CREG: 0,5"),
    ("C1", "+CEREG: 0,1"),
    ("C2", "+CGREG: 4,4"),
    ("C3", '+CGREG: 4,5,"66C0","1042","0",,,,"00000000","01100000","00000000"'),
    ("C4", '+CREG: 2,1,"00A8","5355E8D",7'),
    ("C5", "+COPS: 0"),
    ("C6", '+COPS: 0,0,"AT&T 4G",8'),
    ("C6", '+COPS: 0,0,"T-Mobile Hologram",0'),
    ("C7", "+CSQ: 20,99"),
    ("C7", "+CSQ: 25,0"),
    ("C7", "+CSQ: 28,0"),
    ("C8", '+QIND: "csq",27,99'),
    ("C9", '+QCSQ: "NR5G",-68,38,-11'),
    ("C10", '+QNWINFO: "CAT-M1","33450","LTE BAND 4",2250'),
    ("C10", '+QNWINFO: "EDGE","310260","GSM 1900",613'),
    ("C11", '+QSPN: "AT&T 4G","AT&T 4G","",0,"334050"'),
    ("C12", "+CTZR: 2"),
    ("C12", "+QLTS: (0-2)"),
    ("C13", '+QLTS: "2000/01/01,00:00:00+00,1"'),
    ("C14", '+CCLK: "24/01/18,08:58:19+28"'),
    ("C15", '+QNTP: 0,"2026/07/02,14:27:52+32"'),
    ("C16", '+QNITZ: "80/01/06,00:00:14+22"'),
    ("C17", '+CDSI: "SM",0'),
    # D. PDP context / DNS
    ("D1", '+QICSGP: 1,"","","",0'),
    ("D2", '+QIACT: 1,1,1,"10.XXX.YYY.160"'),
    ("D3", '+QIACT: 1,1,3,"10.28.33.36","2409:8D1E:750C:DFA4::1"'),
    ("D5", '+CGDCONT: 2,"IPV4V6","ims","0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0",0,0,0,0'),
    ("D6", '+CGDCONT: 1,"IPV4V6","","0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0",0,0,0,0,,,,,,,,,"",,,,0'),
    ("D7", '+QIDNSCFG: 1,"100.XXX.YYY.10","100.XXX.YYY.10"'),
    ("D8", '+QIURC: "dnsgip",0,1,0'),
    ("D8", '+QIURC: "dnsgip","172.188.83.251"'),
    ("D9", '+QIURC: "pdpdeact",1'),
    ("D10", '+QPING: 0,"216.58.200.14",32,73,255'),
    ("D10", "+QPING: 0,4,4,0,56,73,66"),
    ("D10", "+QPING: 569"),
    ("D11", '+CGPADDR: 1,"37.81.97.187"'),
    # E. sockets
    ("E1", "+QIOPEN: 0,0"),
    ("E1", "+QIOPEN: 0,566"),
    ("E2", "CONNECT"),
    ("E3", "+QIGETERROR: 552,invalid parameters"),
    ("E4", '+QISTATE: 0,"TCP","104.155.82.190",1883,22742,3,1,0,0,"uart1"'),
    ("E4", '+QISTATE: 0,"TCP LISTENER","37.81.97.187",0,8080,3,1,0,0,"usbat"'),
    ("E5", "SEND OK"),
    ("E6", "SEND FAIL"),
    ("E7", '+QIURC: "recv",0'),
    ("E9", '+QIURC: "recv",0,"buff full"'),
    ("E10", '+QIURC: "incoming",11,0,"78.94.9.92",62060'),
    ("E11", '+QIURC: "incoming full"'),
    ("E12", '+QIURC: "closed",0'),
    ("E12", "CLOSE OK"),
    ("E13", "+QIRD: 3524,3005,519"),
    ("E13", "+QIRD: 0,0,0"),
    ("E13", "+QIRD: 4,4,0"),
    ("E14", "+QIRD: 0"),
    ("E16", "ALREADY CONNECT"),
    # F. errors and odd finals
    ("F1", "ERROR"),
    ("F2", "+CME ERROR: 516"),
    ("F3", "+CMS ERROR: 3"),
    ("F3", "+CMS ERROR: 604"),
    ("F4", "CME Error: unknown"),
    ("F5", "+QMTOPEN: 0,-1"),
    ("F6", '+QSSLCFG: "ignorelocaltime",1,1'),
    ("F8", "+QFUPL: 1267,f5f"),
    # G. identification / misc values
    ("G1", "Quectel"),
    ("G1", "BG96"),
    ("G1", "Revision: BG96MAR02A07M1G"),
    ("G2", "BG95M3LAR02A03"),
    ("G2", "BG95M3LAR02A03_01.204.01.204"),
    ("G3", "Revision: M26FBR03A04_TTS"),
    ("G3", "Revision: M26FBR03A06-TTS"),
    ("G4", "+QINISTAT: 7"),
    ("G4", "+QSIMSTAT: 0,1"),
    ("G4", "+QPCMV: 0,2"),
    ("G5", '+QCFG: "mmwave",ant_chip,ant_type'),
    ("G5", '+QCFG: "gatewayset",(0,1)[,<gateway>]'),
    ("G6", '+QNWPREFCFG: "mode_pref",AUTO'),
    ("G6", '+QNWPREFCFG: "lte_band",1:3:5:7:8:20:28'),
    ("G7", '+QMBNCFG: "List",0,0,0,"Telstra_Australia_Commercial",0x0A010F00,202201111'),
    ("G8", "+QGPSLOC: 142815.000,31.26288,121.64655,2.5,66.2,3,000.00,0.0,0.0,020726,07"),
    ("G9", '+CCID: "89620160002701055486"'),
    ("G10", '+QIND: "FOTA","DOWNLOADING", 37%'),
    # A12: a stray single-character line at start-up
    ("A12", '"'),
    # A4 / A13: a garbled echo, another process's commands on the port
    ("A4", "TATE0"),
    ("A13", '+CRSM: 148,8,""'),
]

#: final result codes among LINES (and the ones a command may end with): never unsolicited noise
FINALS = frozenset({
    "OK", "ERROR", "SEND OK", "SEND FAIL", "CLOSE OK", "CONNECT", "NO CARRIER",
    "+CME ERROR: 10", "+CME ERROR: 14", "+CME ERROR: 516", "+CMS ERROR: 3", "+CMS ERROR: 604",
})

#: lines that are not final result codes: noise for any command whose prefix they do not carry
NOISE = [(shape, text) for shape, text in LINES if text not in FINALS]

#: URC lines that make the daemon act (a module reset, a socket event): they are used, not chatter
USED = frozenset({"RDY", "POWERED DOWN"}) | {t for _, t in LINES if t.startswith("+QIURC:")}

#: (shape id, command line, wire bytes, expected final, expected information lines)
STREAMS: list[tuple[str, str, bytes, str, list[str]]] = [
    # A1: blank line before every line (ATE0)
    ("A1", "AT+CPIN?", b"\r\n+CPIN: READY\r\n\r\nOK\r\n", "OK", ["+CPIN: READY"]),
    # A2: echo ends CR CR LF
    ("A2", "AT", b"AT\r\r\nOK\r\n", "OK", []),
    # A3: echo back after a silent reboot (ATE0 forgotten)
    ("A3", "AT+CGREG?", b"AT+CGREG?\r\r\n+CGREG: 0,1\r\n\r\nOK\r\n", "OK", ["+CGREG: 0,1"]),
    # A4: garbled echo
    ("A4", "ATE0", b"TATE0\r\r\nOK\r\n", "OK", []),
    # A5: 1-2 byte fragments (the tests also cut every stream at every byte)
    ("A5", "AT+CSQ", b"\r\n+CSQ: 25,0\r\n\r\nOK\r\n", "OK", ["+CSQ: 25,0"]),
    # A6: the info line's terminator in the next read, an extra blank line
    ("A6", "AT+CGREG?", b'\r\n+CGREG: 2,1,"5650","29A7DF4",2\r\n\r\n\r\nOK\r\n', "OK",
     ['+CGREG: 2,1,"5650","29A7DF4",2']),
    # A7: data-mode prompt without CR LF, then SEND OK
    ("A7", "AT+QISEND=0,4", b"\r\n> ", "SEND OK", []),
    # A8: the prompt's trailing space left over as a line of one space before SEND OK
    ("A8", "AT+QISEND=0,4", b"\r\n>", "SEND OK", []),
    # A8 / seeds-comparison trap 16: RGx00U formatcfg prompt forms
    ("A8", "AT+QISEND=0,4", b"\r\n>\r\n", "SEND OK", []),
    ("A8", "AT+QISEND=0,4", b"\r\n> \r\n", "SEND OK", []),
    # A9: SEND OK directly followed by the next command in a TX+RX dump (the RX side: SEND OK)
    ("A9", "AT+QISEND=0,4", b"\r\n> ", "SEND OK", []),
    # A10: leftover payload glued to an echo: an unknown line, the answer is unchanged
    ("A10", "AT+QICLOSE=0", b"MQTT<zephyr_publisherAT+QICLOSE=0\r\r\nOK\r\n", "OK", []),
    # A11: no blank lines at all, then blank lines
    ("A11", 'AT+QCFG="usbnet",0', b"OK\r\n", "OK", []),
    ("A11", 'AT+QCFG="usbnet"', b'\r\n+QCFG: "usbnet",0\r\n\r\nOK\r\n', "OK", ['+QCFG: "usbnet",0']),
    # A12: a stray single-character line
    ("A12", "AT", b'\r\n"\r\n\r\nOK\r\n', "OK", []),
    # A13: another process's exchange on the port: its echo and info line are not ours
    ("A13", "AT+CSQ", b'TATE0\r\r\n+CRSM: 148,8,""\r\n\r\n+CSQ: 31,99\r\n\r\nOK\r\n', "OK", ["+CSQ: 31,99"]),
    # A14: the final OK late, after the information line's own CR LF
    ("A14", "AT+CSQ", b"\r\n+CSQ: 31,99\r\n\r\nOK\r\n", "OK", ["+CSQ: 31,99"]),
    # E6: OK then SEND OK for one command (two-stage)
    ("E6", "AT+QISEND=0,4", b"\r\n> ", "SEND OK", []),
    # E14: +QIRD with a payload that looks like lines and results, then OK
    ("E14", "AT+QIRD=0,1500", b"\r\n+QIRD: 16\r\nOK\r\n> \r\nERROR\r\n\r\n\r\nOK\r\n", "OK", ["+QIRD: 16"]),
    ("E14", "AT+QIRD=0,1500", b"\r\n+QIRD: 0\r\n\r\nOK\r\n", "OK", ["+QIRD: 0"]),
    # E15: bare OK for a closed socket, ERROR for a read of one
    ("E15", "AT+QISTATE=1,0", b"\r\nOK\r\n", "OK", []),
    ("E15", "AT+QIRD=0,1500", b"\r\nERROR\r\n", "ERROR", []),
    # G1: ATI, three bare lines
    ("G1", "ATI", b"\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n", "OK",
     ["Quectel", "BG96", "Revision: BG96MAR02A07M1G"]),
]

#: what the module prints after the data of a QISEND stream (the prompt streams above)
SEND_TAILS = {
    "A7": b"\r\nSEND OK\r\n",
    "A8": b" \r\nSEND OK\r\n",
    "A9": b"\r\nSEND OK\r\n",
    "E6": b"\r\nOK\r\n\r\nSEND OK\r\n",
}

#: a direct-push frame and a CR-only module's exchange (payload framing stays exact)
PUSH_FRAME = b'\r\n+QIURC: "recv",0,4\r\ntest\r\n'
CR_ONLY_QIRD = b"+QIRD: 5\rhe\r\nl\rOK\r"
