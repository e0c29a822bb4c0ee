"""The README's client snippets really work: run them against `modemd --emulate`.

Snippets are the fenced blocks preceded by `<!-- snippet: NAME -->` in README.md. They are written for
a real installation (forward "web" on 127.0.0.1:8080 and /run/modemd/web.sock to example.com:80,
SOCKS5 on 127.0.0.1:1080); here `example.com:80` becomes a local HTTP server (the emulator's module
resolves only `localhost` and connects only to loopback) and the local ports and paths free ones.
The Go and Node-SOCKS5 snippets are not run (no Go toolchain; an npm package); the README says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PY = sys.executable
TOKEN = "hello from the far side of the module"
SNIPPET = re.compile(r"<!-- snippet: ([\w-]+) -->\n```(\w+)\n(.*?)```", re.S)
RUN = ["curl", "socat", "python-forward", "python-socks5", "node-forward"]
CONFIGS = ["config-port", "config-apn", "config-power", "config-clients"]
NOT_RUN = ["node-socks5", "go"]


def snippets() -> dict[str, tuple[str, str]]:
    """name -> (language, text)."""
    found: dict[str, tuple[str, str]] = {}
    for name, lang, text in SNIPPET.findall(README.read_text()):
        assert name not in found, f"snippet {name} twice in README.md"
        found[name] = (lang, text)
    return found


class Env:
    def __init__(self, tmp: Path, http: int, fwd: int, socks: int) -> None:
        self.tmp, self.http, self.fwd, self.socks = tmp, http, fwd, socks

    def rewrite(self, text: str) -> str:
        text = text.replace("/run/modemd/web.sock", str(self.tmp / "web.sock"))
        text = text.replace("/etc/modemd/apn-password", str(self.tmp / "apn-password"))
        text = text.replace("example.com:80", f"localhost:{self.http}")
        text = text.replace("http://example.com/", f"http://localhost:{self.http}/")
        text = text.replace('"example.com", 80', f'"localhost", {self.http}')
        text = re.sub(r"\b8080\b", str(self.fwd), text)
        return re.sub(r"\b1080\b", str(self.socks), text)


def test_snippets_are_in_the_readme():
    found = snippets()
    for name in RUN + CONFIGS + NOT_RUN:
        assert name in found, f"README.md lost the snippet {name}"
    assert found["go"][0] == "go" and found["node-socks5"][0] == "js"
    text = README.read_text()
    assert "not\nrun by the tests" in text or "not run by the tests" in text


def test_config_snippets_pass_check_config(tmp_path):
    found = snippets()
    env = Env(tmp_path, 80, 8080, 1080)
    (tmp_path / "apn-password").write_text("s3cret-password\n")
    cfg = tmp_path / "modemd.toml"
    cfg.write_text("\n".join(env.rewrite(found[name][1]) for name in CONFIGS))
    res = subprocess.run([PY, "-m", "modemd.cli", "check-config", str(cfg)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"{cfg}: OK", res.stdout + res.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A local HTTP server and `modemd --emulate` running the README's client configuration."""
    tmp = tmp_path_factory.mktemp("readme")
    www = tmp / "www"
    www.mkdir()
    (www / "index.html").write_text(TOKEN + "\n")
    e = Env(tmp, free_port(), free_port(), free_port())
    http = subprocess.Popen(
        [PY, "-m", "http.server", str(e.http), "--bind", "127.0.0.1", "--directory", str(www)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    cfg = tmp / "modemd.toml"
    cfg.write_text(f"""
[modem]
model = "bg96"
lock_dir = "{tmp}"
[pdp]
apn = "internet"
[metrics]
listen = ""
[control]
socket = "{tmp}/control.sock"
""" + e.rewrite(snippets()["config-clients"][1]))
    log = open(tmp / "daemon.log", "w+")  # noqa: SIM115
    daemon = subprocess.Popen([PY, "-m", "modemd.cli", "--emulate", "--config", str(cfg)],
                              stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while True:
            assert daemon.poll() is None, (tmp / "daemon.log").read_text()
            res = subprocess.run(
                [PY, "-m", "modemd.modemctl", "--socket", str(tmp / "control.sock"), "--json",
                 "status"], capture_output=True, text=True, timeout=30,
            )
            if res.returncode == 0 and json.loads(res.stdout).get("state") == "serving":
                break
            assert time.monotonic() < deadline, (tmp / "daemon.log").read_text()
            time.sleep(0.2)
        e.log = tmp / "daemon.log"
        yield e
    finally:
        daemon.terminate()
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        http.terminate()
        http.wait()


def run_ok(env: Env, argv: list[str], what: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0 and TOKEN in res.stdout, (
        f"{what}\nrc={res.returncode}\nstdout={res.stdout[-1000:]}\nstderr={res.stderr[-1000:]}\n"
        f"daemon log:\n{env.log.read_text()[-3000:]}"
    )


def shell_lines(name: str) -> list[str]:
    lang, text = snippets()[name]
    assert lang == "sh"
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("tool", ["curl", "socat"])
def test_shell_snippets(env, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} missing (tests/run.sh installs it)")
    lines = shell_lines(tool)
    assert len(lines) >= 2
    for line in lines:
        line = env.rewrite(line)
        run_ok(env, ["bash", "-euo", "pipefail", "-c", line], line)


@pytest.mark.parametrize("name", ["python-forward", "python-socks5"])
def test_python_snippets(env, name):
    lang, text = snippets()[name]
    assert lang == "python"
    run_ok(env, [PY, "-c", env.rewrite(text)], name)


def test_node_forward_snippet(env):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node missing (the README says the Node snippets may be untested)")
    lang, text = snippets()["node-forward"]
    assert lang == "js"
    run_ok(env, [node, "-e", env.rewrite(text)], "node-forward")


def test_connections_went_through_the_module(env):
    """Every snippet above used a module socket: the daemon logged their opens per forward."""
    text = env.log.read_text()
    for forward in ("web", "web-unix", "socks"):
        assert re.search(rf"connect_id \d+ opened: TCP to localhost:{env.http} .*forward={forward}\n",
                         text), (forward, text[-3000:])
