"""The whole daemon as users run it: `modemd --emulate` in a subprocess, driven by real clients."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ports import free_port

PY = sys.executable


def write_config(tmp: Path, http_port: int, extra: str = "") -> tuple[Path, dict]:
    ports = {"socks": free_port(), "metrics": free_port(), "fwd": free_port()}
    cfg = tmp / "modemd.toml"
    cfg.write_text(f"""
[modem]
model = "bg96"
lock_dir = "{tmp}"
[pdp]
apn = "internet"
password = "s3cret-Pa55word"
username = "gateway-user"
auth = "chap"
[[forward]]
name = "web"
listen = "tcp:127.0.0.1:{ports['fwd']}"
remote = "localhost:{http_port}"
[[forward]]
name = "webunix"
listen = "unix:{tmp}/web.sock"
remote = "127.0.0.1:{http_port}"
mode = "0660"
[socks]
listen = "tcp:127.0.0.1:{ports['socks']}"
[metrics]
listen = "127.0.0.1:{ports['metrics']}"
[control]
socket = "{tmp}/control.sock"
{extra}
""")
    return cfg, ports


class Daemon:
    def __init__(self, tmp: Path, cfg: Path, emulate: bool = True) -> None:
        self.tmp = tmp
        self.cfg = cfg
        self.log = open(tmp / "daemon.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PY, "-m", "modemd.cli", *(["--emulate"] if emulate else []), "--config", str(cfg)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, "-m", "modemd.modemctl", "--socket", str(self.tmp / "control.sock"), *args],
            capture_output=True, text=True, timeout=60, check=check,
        )

    def wait_serving(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        status = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            res = self.ctl("--json", "status", check=False)
            if res.returncode == 0:
                status = json.loads(res.stdout)
                if status.get("state") == "serving":
                    return status
            time.sleep(0.2)
        raise AssertionError(f"not serving: {status}\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.tmp / "daemon.log").read_text()

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob.bin").write_bytes(os.urandom(300_000))
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, root / "blob.bin"
    proc.terminate()
    proc.wait()


@pytest.fixture
def daemon(tmp_path, http_server):
    cfg, ports = write_config(tmp_path, http_server[0])
    d = Daemon(tmp_path, cfg)
    d.ports = ports
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()
    d.log.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing (tests/run.sh installs it)")
def test_emulated_daemon_serves_real_clients(daemon, http_server, tmp_path):
    status = daemon.wait_serving()
    assert status["pdp"]["up"] and status["pdp"]["address"]
    # the banner says the emulator resolves only its hosts map (README's example.com would 565)
    assert "resolves only localhost -> 127.0.0.1" in daemon.output()
    assert "example.com, answer 565 dns_failed" in daemon.output()
    blob = http_server[1].read_bytes()
    # curl through SOCKS5 with the name resolved by the module
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "--socks5-hostname",
         f"127.0.0.1:{daemon.ports['socks']}", f"http://localhost:{http_server[0]}/blob.bin"],
        capture_output=True, timeout=90, check=True,
    ).stdout
    assert sha(out) == sha(blob)
    # curl through the TCP forward and the unix forward
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "60", f"http://127.0.0.1:{daemon.ports['fwd']}/blob.bin"],
        capture_output=True, timeout=90, check=True,
    ).stdout
    assert sha(out) == sha(blob)
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "--unix-socket", str(tmp_path / "web.sock"),
         "http://x/blob.bin"], capture_output=True, timeout=90, check=True,
    ).stdout
    assert sha(out) == sha(blob)
    assert oct((tmp_path / "web.sock").stat().st_mode & 0o777) == "0o660"
    # modemctl
    text = daemon.ctl("status").stdout
    assert "serving" in text
    conns = json.loads(daemon.ctl("--json", "connections").stdout)
    assert isinstance(conns, list)
    resolved = json.loads(daemon.ctl("--json", "resolve", "localhost").stdout)
    assert resolved["addresses"] == ["127.0.0.1"]
    # `date -u -s "$(modemctl ntp SERVER)"`: GNU date reads what modemctl ntp prints
    stamp = daemon.ctl("ntp", "localhost").stdout.strip()
    seconds = subprocess.run(["date", "-u", "-d", stamp, "+%s"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    assert abs(int(seconds) - time.time()) < 60, stamp
    failed = daemon.ctl("ntp", "no.such.host", check=False)
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr == "modemctl: no.such.host: NTP failed: 565 dns_failed\n"
    at = json.loads(daemon.ctl("--json", "at", "AT+CSQ").stdout)
    assert at["final"] == "OK" and at["lines"][0].startswith("+CSQ:")
    # an operator's ATV0 would make every answer unreadable to modemd: refused in one line
    refused = daemon.ctl("at", "ATE0V0", check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == ("modemctl: ATV0: numeric result codes: modemd reads the verbose "
                              "ones; not allowed\n")
    assert daemon.ctl("at", 'AT+QICFG="viewmode"').stdout == '+QICFG: "viewmode",0\nOK\n'
    # metrics
    body = subprocess.run(
        ["curl", "-sS", f"http://127.0.0.1:{daemon.ports['metrics']}/metrics"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    assert 'modemd_supervisor_state{state="serving"} 1.0' in body
    assert 'modemd_forward_bytes_total{direction="from_module",forward="web"}' in body
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=body, text=True,
                               capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
    # secrets never reach the log, metrics or status
    for secret in ("s3cret-Pa55word", "gateway-user"):
        assert secret not in daemon.output()
        assert secret not in body
        assert secret not in text
    # graceful stop: bounded, unix sockets removed
    t0 = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "web.sock").exists()


def test_sighup_reload_adds_a_forward_without_dropping_others(daemon, http_server, tmp_path):
    daemon.wait_serving()
    keep = socket.create_connection(("127.0.0.1", daemon.ports["fwd"]), 5)
    keep.sendall(b"GET /blob.bin HTTP/1.0\r\n\r\n")
    first = keep.recv(100)
    assert first.startswith(b"HTTP/1.0 200")
    new_port = free_port()
    text = daemon.cfg.read_text() + f"""
[[forward]]
name = "added"
listen = "tcp:127.0.0.1:{new_port}"
remote = "localhost:{http_server[0]}"
"""
    # [[forward]] tables must come before other tables in TOML only by convention; append works
    daemon.cfg.write_text(text)
    daemon.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", new_port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise AssertionError(daemon.output())
    rest = b""
    keep.settimeout(30)
    while chunk := keep.recv(65536):
        rest += chunk
    body = (first + rest).split(b"\r\n\r\n", 1)[1]
    assert sha(body) == sha(http_server[1].read_bytes())
    keep.close()


def test_second_signal_during_shutdown_still_cleans_up(daemon, tmp_path):
    """systemd's stop and a `kill` at once, or Ctrl+C twice: the second signal comes while the
    first one's graceful shutdown runs. It ends the daemon at once, and the control socket, the
    unix forward and the port's lock file are still removed (trio re-raises a signal its receiver
    still holds when it closes: before, that killed the daemon with all three left behind)."""
    daemon.wait_serving()
    left = [tmp_path / "control.sock", tmp_path / "web.sock"]
    assert all(p.exists() for p in left) and list(tmp_path.glob("LCK..*"))
    # stopped, the daemon gets both signals together: the first starts the graceful shutdown,
    # the second arrives during it, whatever the machine's load (no race with its speed)
    daemon.proc.send_signal(signal.SIGSTOP)
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.send_signal(signal.SIGINT)
    daemon.proc.send_signal(signal.SIGCONT)
    assert daemon.proc.wait(30) == 0, daemon.output()
    assert "during the shutdown: exiting now" in daemon.output()
    assert "Traceback" not in daemon.output()
    assert not [p for p in left if p.exists()] and not list(tmp_path.glob("LCK..*"))


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "modemd.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_check_config_prints_every_error_with_its_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[modem]\nport = "/dev/ttyUSB2"\nbaudrate = 12345\n[pdp]\nauth = "bogus"\n'
                   '[[forward]]\nname = "x"\nlisten = "tcp:0.0.0.0:80"\nremote = "a:1"\n')
    res = run_cli("check-config", str(bad))
    assert res.returncode == 1
    assert "modem.baudrate" in res.stderr and "pdp.auth" in res.stderr
    assert "forward[0].listen" in res.stderr
    assert "Traceback" not in res.stderr
    good = run_cli("check-config", "--emulate", "config/modemd.toml")
    assert good.returncode == 0, good.stderr


@pytest.mark.parametrize("case", ["bad_config", "missing_file", "busy_port"])
def test_user_errors_are_one_line(tmp_path, case):
    cfg = tmp_path / "c.toml"
    holder = None
    if case == "busy_port":
        import pty

        master, slave = pty.openpty()
        path = os.ttyname(slave)
        (tmp_path / f"LCK..{Path(path).name}").write_text(f"{os.getpid():10d}\n")
        holder = open(tmp_path / f"LCK..{Path(path).name}", "a")  # noqa: SIM115
        import fcntl

        fcntl.flock(holder, fcntl.LOCK_EX)
        cfg.write_text(f'[modem]\nport = "{path}"\nlock_dir = "{tmp_path}"\n'
                       f'[metrics]\nlisten = ""\n[control]\nsocket = ""\n')
    elif case == "bad_config":
        cfg.write_text("[modem\n")
    res = run_cli("--config", str(cfg))
    if holder:
        holder.close()
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("modemd: "), res.stderr
    if case == "busy_port":
        assert f"in use by process {os.getpid()}" in last


def test_instance_reads_its_own_config_and_checks_its_name():
    res = run_cli("--instance", "modem-x9")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(
        "modemd: /etc/modemd/modem-x9.toml: no such file"), res.stderr
    bad = run_cli("--instance", "a/b")
    assert bad.returncode == 2 and "instance name 'a/b' must be" in bad.stderr


def test_missing_port_is_waited_for_with_one_clear_line(tmp_path):
    """A port that does not exist (yet) is waited for: USB enumeration must not kill the daemon."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[modem]\nport = "{tmp_path}/ttyNOPE"\nlock_dir = "{tmp_path}"\n'
                   f'[metrics]\nlisten = ""\n[control]\nsocket = "{tmp_path}/control.sock"\n')
    d = Daemon(tmp_path, cfg, emulate=False)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            res = d.ctl("--json", "status", check=False)
            if res.returncode == 0 and json.loads(res.stdout)["state"] == "port_missing":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(d.output())
        time.sleep(1.0)  # several polls later: still one warning, no spam
        assert d.output().count("; waiting for it") == 1
        assert d.output().count("power.backend = none") == 1  # one notice, not two
        assert d.stop() == 0
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        d.log.close()


def test_busy_metrics_port_is_one_line(tmp_path, http_server):
    cfg, ports = write_config(tmp_path, http_server[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports["metrics"]))
        s.listen()
        res = run_cli("--emulate", "--config", str(cfg))
    assert res.returncode == 2
    assert "metrics" in res.stderr and "Traceback" not in res.stderr
