#!/usr/bin/env python3
"""(Re)write the seed corpora in fuzz/corpus/<target>/ from the realistic inputs below.

Each seed is a small real-world input with the target's header bytes in front (see each target's
docstring). Run it after changing a target's input layout: ``python fuzz/make_corpus.py``.
"""

from __future__ import annotations

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.real_lines import (  # noqa: E402 - every line shape real modules print
    CR_ONLY_QIRD,
    FINALS,
    NOISE,
    PUSH_FRAME,
    SEND_TAILS,
    STREAMS,
)

# -- framer: head byte (command index | push cids << 4 | small max_line << 7), mode bit 0 and chunk
# seed (bits 1-7), transcript. Odd seeds: split mode (whole vs chunked); even: silence mode.
FRAMER = {
    # QIRD with a payload, then QISEND (next command): prompt, SEND OK
    "qird_then_qisend": (0x00, 1, b"\r\n+QIRD: 5\r\nhello\r\n\r\nOK\r\n> \r\nSEND OK\r\n"),
    # QIRD of binary data that looks like lines, finals and a prompt
    "qird_binary": (
        0x00, 2, b"\r\n+QIRD: 27\r\nOK\r\n>\r\nERROR\r\n+QIURC: x\r\n\r\nOK\r\n",
    ),
    # QIRD without length, with a URC in the middle and an empty read
    "qird_urc_between": (
        0x02, 3,
        b'\r\n+QIURC: "recv",1\r\n+QIRD: 3\r\nabc\r\n\r\nOK\r\nQuectel\r\nOK\r\n',
    ),
    # UDP read: the sender's address after the length
    "qird_udp": (0x00, 4, b'\r\n+QIRD: 4,"10.0.0.1",5683\r\n\x00\x01\x02\x03\r\n\r\nOK\r\n'),
    # a full-size read (the modules' maximum, 1500 bytes), with the small line limit
    "qird_full": (
        0x80, 16, b"\r\n+QIRD: 1500\r\n" + bytes(range(256)) * 5 + b"\r\nOK" * 55 + b"\r\n\r\nOK\r\n"
        + b"\r\n+QIURC: \"recv\",0\r\n" * 6,
    ),
    "qird_empty": (0x00, 5, b"\r\n+QIRD: 0\r\n\r\nOK\r\n"),
    # direct push mode on connect_id 0 (bit 4)
    "push_recv": (
        0x19, 6, b'\r\n+QIURC: "recv",0,4\r\nping\r\n\r\n+QIURC: "recv",0,2\r\n\r\n\r\nOK\r\n',
    ),
    # boot chatter with no command of ours answering
    "boot": (
        0x09, 7,
        b"\r\nRDY\r\n\r\nAPP RDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n"
        b"\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n\r\nOK\r\n",
    ),
    # ATI with bare information lines
    "ati": (0x03, 8, b"\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n"),
    # BC25 two-stage QISEND: prompt, OK, then SEND OK
    "bc25_qisend": (0x04, 9, b"\r\n> \r\nOK\r\n\r\nSEND OK\r\n"),
    # BC25 two-stage QICLOSE
    "bc25_qiclose": (0x05, 10, b"\r\nOK\r\n\r\nCLOSE OK\r\n"),
    "qistate": (
        0x06, 11,
        b'\r\n+QISTATE: 0,"TCP","93.184.216.34",80,65344,2,1,0,0,"usbmodem"\r\n'
        b'+QISTATE: 1,"UDP","10.0.0.1",5683,0,2,1,1,0,"usbmodem"\r\n\r\nOK\r\n',
    ),
    # QIOPEN: OK, then the result URC; DNS and ping URCs
    "qiopen": (
        0x07, 12,
        b'\r\nOK\r\n\r\n+QIOPEN: 0,0\r\n\r\n+QIURC: "dnsgip",0,2,600\r\n'
        b'\r\n+QIURC: "dnsgip","93.184.216.34"\r\n\r\n+QIURC: "dnsgip","2606:2800:220:1::1"\r\n'
        b'\r\n+QPING: 0,"93.184.216.34",32,48,255\r\n\r\n+QPING: 0,4,4,0,41,52,46\r\n',
    ),
    "cme_error": (0x00, 13, b"\r\n+CME ERROR: 550\r\n\r\nERROR\r\n"),
    "pdpdeact": (
        0x09, 14,
        b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QIURC: "closed",0\r\n\r\n'
        b'+QIURC: "incoming",11,0,"10.0.0.9",40000\r\n\r\n+QIURC: "incoming full"\r\n',
    ),
    # echo on, the command line comes back first; a long line with the small line limit
    "echo_and_long_line": (
        0x89, 15, b"AT\r\r\nOK\r\n" + b"X" * 100 + b"\r\n+CEREG: 5\r\n",
    ),
}

#: fuzz_framer.COMMANDS index for a command line of tests/real_lines.py
_INDEX = {"AT+QIRD": 0, "AT+QISEND": 1, "ATI": 3, "AT+QICLOSE": 5, "AT+QISTATE": 6}


def _index(text: str) -> int:
    for head, index in _INDEX.items():
        if text.startswith(head):
            return index
    return 9  # AT: everything else is noise or an unknown line to it


def real_framer_seeds() -> dict[str, tuple[int, int, bytes]]:
    """Every shape of line-shapes.md (tests/real_lines.py) as seeds, in both modes."""
    seeds: dict[str, tuple[int, int, bytes]] = {}
    for n, (shape, text, wire, _final, _lines) in enumerate(STREAMS):
        body = wire + SEND_TAILS.get(shape, b"")
        seeds[f"real_{shape}_{n}"] = (_index(text), 2 * n + 1, body)
        seeds[f"real_{shape}_{n}_cut"] = (_index(text), 2 * n, body.replace(b"\r\n", b"\r", 1))
    for n, (shape, line) in enumerate(NOISE):
        noise = line.encode("latin-1")
        body = b"\r\n+QIRD: 4\r\nab\r\n\r\n" + noise + b"\r\n\r\nOK\r\n"
        seeds[f"noise_{shape}_{n}"] = (0x00, (2 * n + 1) & 0xFF, body)
        seeds[f"noise_{shape}_{n}_at"] = (0x09, (2 * n) & 0xFF, b"\r\n" + noise + b"\r\n\r\nOK\r\n")
    every = b"".join(b"\r\n" + line.encode("latin-1") + b"\r\n" for _, line in NOISE)
    seeds["noise_all"] = (0x09, 3, every + b"\r\nOK\r\n")
    seeds["noise_all_ati"] = (0x03, 5, b"\r\nQuectel\r\n" + every + b"BG96\r\n\r\nOK\r\n")
    cr_only = b"".join(line.encode("latin-1") + b"\r" for _, line in NOISE)
    seeds["cr_only_all"] = (0x09, 4, cr_only + b"OK\r")
    seeds["cr_only_qird"] = (0x00, 6, b"OK\r" + CR_ONLY_QIRD)
    seeds["finals_split"] = (
        0x09, 7, b"".join(b"\r\n" + f.encode() + b"\r" + b"\n" for f in sorted(FINALS))
    )
    seeds["push_split"] = (0x19, 9, PUSH_FRAME * 3 + b"\r\nOK\r")
    seeds["push_silence"] = (0x19, 10, PUSH_FRAME + b'+QIURC: "recv",0,4\r' + b"abcd\r\n")
    return seeds


URC = {
    "recv": b'+QIURC: "recv",0',
    "recv_push": b'+QIURC: "recv",1,1460',
    "recv_udp": b'+QIURC: "recv",2,5,"10.0.0.1",5683',
    "recv_full": b'+QIURC: "recv",0,"buff full"',
    "closed": b'+QIURC: "closed",3',
    "incoming": b'+QIURC: "incoming",11,0,"2001:db8::9",40000',
    "incoming_full": b'+QIURC: "incoming full",1',
    "pdpdeact": b'+QIURC: "pdpdeact",1',
    "dnsgip_head": b'+QIURC: "dnsgip",0,2,600',
    "dnsgip_addr": b'+QIURC: "dnsgip","93.184.216.34"',
    "qiopen": b"+QIOPEN: 0,565",
    "qping_reply": b'+QPING: 0,"8.8.8.8",32,48,117',
    "qping_summary": b"+QPING: 0,4,4,0,41,52,46",
    "qntp": b'+QNTP: 0,"2024/05/01,12:00:00+08"',
    "qiactex": b'+QIACTEX: 1,0,1,"10.64.1.2","2001:db8::2"',
    "cereg": b'+CEREG: 5,"1A2B","01C3D4E5",7',
    "cpin": b"+CPIN: NOT READY",
    "rdy": b"RDY",
    "typographic": "+QIURC: \u201crecv\u201d,0,4".encode(),
}


def socks_request(cmd: int, atyp: int, addr: bytes, port: int) -> bytes:
    return bytes([5, cmd, 0, atyp]) + addr + struct.pack("!H", port)


GREETING = b"\x05\x01\x00"
SOCKS5 = {
    "connect_ipv4": GREETING + socks_request(1, 1, bytes([93, 184, 216, 34]), 80),
    "connect_ipv6": GREETING + socks_request(
        1, 4, bytes.fromhex("20010db8000000000000000000000001"), 443
    ),
    "connect_domain": GREETING + socks_request(1, 3, b"\x0bexample.com", 443) + b"GET / HTTP/1.0\r\n\r\n",
    "udp_associate": b"\x05\x02\x00\x02" + socks_request(3, 1, bytes(4), 0),
    "udp_datagram": b"\x00\x00\x00\x03\x0bexample.com\x005hello",
    "domain_injection": GREETING
    + socks_request(1, 3, bytes([22]) + b'evil"\r\nAT+QPOWD=1\r\n', 80),
    "bind": GREETING + socks_request(2, 1, bytes(4), 1),
    "socks4": b"\x04\x01\x00\x50\x5d\xb8\xd8\x22user\x00",
}
CHUNK_SEEDS = {"connect_ipv4": 0, "connect_ipv6": 1, "connect_domain": 2}


def write(target: str, name: str, data: bytes) -> None:
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main() -> None:
    for name, (head, seed, body) in {**FRAMER, **real_framer_seeds()}.items():
        write("framer", name, bytes([head, seed]) + body)
    for name, line in URC.items():
        write("urc", name, line)
    write("urc", "recv_push_with_payload", b'\x01QIURC: "recv",0,8')
    for name, wire in SOCKS5.items():
        write("socks5", name, bytes([CHUNK_SEEDS.get(name, 7)]) + wire)
    with open(os.path.join(ROOT, "config", "modemd.toml"), "rb") as f:
        example = f.read()
    write("config", "example", b"0" + example)  # '0': TOML text, not emulated
    write("config", "minimal_emulated", b'2[pdp]\napn = "internet"\n')  # '2': emulated
    write(
        "config", "pap_password",
        b'0[modem]\nport = "/dev/ttyUSB2"\n[pdp]\napn = "iot.example"\nauth = "pap"\n'
        b'username = "user"\npassword = "CorrectHorseBattery"\n',
    )
    write(
        "config", "password_file",
        b'2[pdp]\nauth = "chap"\nusername = "u"\npassword_file = "pw.txt"\n',
    )
    write(
        "config", "forward_mistake",
        b'2[[forward]]\nname = "a"\nlisten = "tcp:127.0.0.1:1883"\nremote = "evil\\"x:1"\n',
    )
    write("config", "structured_1", bytes(range(1, 64, 2)))
    write("config", "structured_2", b"\x03" + bytes(range(255, 0, -3)))


if __name__ == "__main__":
    main()
