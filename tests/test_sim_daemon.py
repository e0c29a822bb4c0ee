"""A PIN-locked SIM, end to end: the emulator process with a SIM PIN, the daemon on its tty, real
modemctl, curl and promtool. The PIN never shows in logs, status, metrics or `modemctl at`."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.ports import free_port

PY = sys.executable
# 8 digits, and looked for as a whole number: a 4-digit PIN turns up inside timestamps and
# counters of a metrics page by chance
PIN = "47110815"
WRONG = "86429731"


def emu_ctl(path: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def write_config(tmp: Path, metrics_port: int, pin: str) -> Path:
    cfg = tmp / "modemd.toml"
    (tmp / "pin").write_text(pin + "\n")
    os.chmod(tmp / "pin", 0o600)
    cfg.write_text(f"""
[modem]
port = "{tmp}/tty"
model = "bg96"
lock_dir = "{tmp}"
[sim]
pin_file = "pin"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[control]
socket = "{tmp}/control.sock"
""")
    return cfg


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_pin_locked_sim_end_to_end(tmp_path):
    emu_sock = tmp_path / "emu.sock"
    emu = subprocess.Popen(
        [PY, "-m", "modemd.emulator", "--tty-link", str(tmp_path / "tty"), "--control",
         str(emu_sock), "--sim-pin", PIN, "--boot-delay", "0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    log = open(tmp_path / "daemon.log", "w+")  # noqa: SIM115
    metrics_port = free_port()
    cfg = write_config(tmp_path, metrics_port, WRONG)
    state = tmp_path / "state"
    daemon = None
    try:
        wait_for(lambda: (tmp_path / "tty").exists() and emu_sock.exists(), "the emulator")
        daemon = subprocess.Popen(
            [PY, "-m", "modemd.cli", "--config", str(cfg), "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "STATE_DIRECTORY": str(state)},
        )

        def ctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
            return subprocess.run(
                [PY, "-m", "modemd.modemctl", "--socket", str(tmp_path / "control.sock"), *args],
                capture_output=True, text=True, timeout=60, check=check,
            )

        def status_is(name: str):
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            res = ctl("status", "--json", check=False)
            st = json.loads(res.stdout) if res.returncode == 0 else {}
            return st if st.get("state") == name else None

        st = wait_for(lambda: status_is("sim_pin_rejected"), "sim_pin_rejected")
        assert st["sim"] == {"state": "sim_pin_rejected", "pin_attempts_left": 2,
                             "puk_attempts_left": 10}
        assert "[sim] pin or pin_file" in st["status"] and str(cfg) in st["status"]
        text = ctl("status").stdout
        assert "sim_pin_rejected (2 PIN, 10 PUK attempts left)" in text
        at = ctl("--json", "at", "AT+CPIN?").stdout
        assert json.loads(at)["lines"] == ["+CPIN: SIM PIN"]
        body = subprocess.run(
            ["curl", "-sS", f"http://127.0.0.1:{metrics_port}/metrics"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        assert 'modemd_supervisor_state{state="sim_pin_rejected"} 1.0' in body
        assert "modemd_sim_pin_attempts_left 2.0" in body
        assert "modemd_sim_puk_attempts_left 10.0" in body
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], input=body, text=True,
                                   capture_output=True)
            assert check.returncode == 0, check.stdout + check.stderr
        assert "cpin_writes=1 " in emu_ctl(emu_sock, "sim status")
        # the right PIN in the file, then reload: tried once, serving
        (tmp_path / "pin").write_text(PIN + "\n")
        ctl("reload")
        st = wait_for(lambda: status_is("serving"), "serving")
        assert st["sim"]["state"] == "ready" and st["sim"]["pin_attempts_left"] == 3
        assert "cpin_writes=2 " in emu_ctl(emu_sock, "sim status")
        assert (state / "sim-rejected.json").exists()
        for secret in (PIN, WRONG):
            shown = re.compile(rf"(?<!\d){secret}(?!\d)")
            for text_seen in ((tmp_path / "daemon.log").read_text(), body, text, at, json.dumps(st),
                              (state / "sim-rejected.json").read_text()):
                assert not shown.search(text_seen)
        daemon.terminate()
        assert daemon.wait(30) == 0
    finally:
        for proc in (daemon, emu):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        log.close()
