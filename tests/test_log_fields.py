"""The daemon's log calls carry the structured fields operators filter the journal by.

`journalctl MODEM_STATE=serving`, `journalctl FORWARD=web`, `journalctl CONNECT_ID=3` only work if the
important log calls pass `extra={"MODEM_STATE": ..., "CONNECT_ID": ..., "FORWARD": ...}` (modemd.logs
turns them into journal fields, or `key=value` on stderr). This runs the real daemon in-process on the
emulator, moves data through a forward, has a second forward refused, and looks at the records.
The same fields in the real journal are checked by tests/test_packaging.py (nspawn).
"""

from __future__ import annotations

import argparse
import logging

import pytest
import trio

from modemd.config import load_config
from modemd.daemon import Daemon
from modemd.logs import StderrFormatter, structured_fields
from tests.sockets_helpers import echo_handler, free_port, tcp_server


def config(tmp_path, echo_port: int, fwd_port: int, dead_fwd_port: int):
    path = tmp_path / "modemd.toml"
    path.write_text(f"""
[modem]
model = "bg96"
lock_dir = "{tmp_path}"
[pdp]
apn = "internet"
[[forward]]
name = "echo"
listen = "tcp:127.0.0.1:{fwd_port}"
remote = "127.0.0.1:{echo_port}"
[[forward]]
name = "dead"
listen = "tcp:127.0.0.1:{dead_fwd_port}"
remote = "127.0.0.1:{free_port()}"
[proxy]
linger_seconds = 0.2
[metrics]
listen = ""
[control]
socket = ""
""")
    return path


def records(caplog, logger: str, **fields):
    """Records of `logger` (or its children) carrying every one of `fields` (value None: any)."""
    out = []
    for rec in caplog.records:
        if not (rec.name == logger or rec.name.startswith(logger + ".")):
            continue
        have = structured_fields(rec)
        if all(k in have and (v is None or have[k] == v) for k, v in fields.items()):
            out.append(rec)
    return out


async def test_state_socket_and_forward_events_carry_fields(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    fwd_port, dead_port = free_port(), free_port()
    async with tcp_server(echo_handler) as server:
        path = config(tmp_path, server.port, fwd_port, dead_port)
        args = argparse.Namespace(emulate=True, emulate_profile="bg96", emulate_baud=0,
                                  config=str(path), log_level=None)
        daemon = Daemon(load_config(path, emulate=True), args)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.run)
            with trio.fail_after(30):
                while not (hasattr(daemon, "manager") and daemon.link.serving(1)):
                    await trio.sleep(0.05)
                async with await trio.open_tcp_stream("127.0.0.1", fwd_port) as client:
                    await client.send_all(b"ping")
                    assert await client.receive_some(100) == b"ping"
                    await client.send_eof()  # the module has no half-close: linger, then QICLOSE
                    assert await client.receive_some(100) == b""
                # a forward whose remote refuses: the open fails, the client gets a reset
                async with await trio.open_tcp_stream("127.0.0.1", dead_port) as client:
                    with pytest.raises(trio.BrokenResourceError):
                        await client.receive_some(100)
                while daemon.manager.ids_in_use:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    # supervisor: every state transition names the new state
    states = [r.MODEM_STATE for r in records(caplog, "modemd.supervisor", MODEM_STATE=None)]
    assert states[-1] == "serving" and "activating" in states, states
    assert all(r.getMessage().endswith(r.MODEM_STATE) or f"-> {r.MODEM_STATE}" in r.getMessage()
               for r in records(caplog, "modemd.supervisor", MODEM_STATE=None))

    # socket layer: open and close of the forward's connection, with its connect_id
    opened = records(caplog, "modemd.sockets", FORWARD="echo", CONNECT_ID=None)
    texts = [r.getMessage() for r in opened]
    assert any("opened" in t for t in texts) and any("closed" in t for t in texts), texts
    cid = opened[0].CONNECT_ID
    assert isinstance(cid, int) and f"connect_id {cid} " in opened[0].getMessage()
    # ... and of the one that failed
    failed = records(caplog, "modemd.sockets", FORWARD="dead", CONNECT_ID=None)
    assert any("failed to open" in r.getMessage() for r in failed), [r.getMessage() for r in failed]

    # proxy: listeners and refusals name their forward
    assert records(caplog, "modemd.proxy", FORWARD="echo")
    refused = records(caplog, "modemd.proxy", FORWARD="dead")
    assert any("refused" in r.getMessage() for r in refused)

    # on stderr the fields follow the message as key=value
    line = StderrFormatter(prefix=True).format(opened[0])
    assert line.startswith("<6>modemd.sockets: connect_id ")
    assert line.endswith(f"connect_id={cid} forward=echo")
