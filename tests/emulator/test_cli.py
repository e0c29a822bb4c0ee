"""The command line: python -m modemd.emulator, the control socket, the power hook."""

import os
import signal
import subprocess
import sys

import trio

from .helpers import Port

PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(__file__)))}


async def _control(path: str, line: str) -> str:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    with sock:
        await sock.connect(path)
        stream = trio.SocketStream(sock)
        await stream.send_all(line.encode() + b"\n")
        buf = b""
        with trio.fail_after(10):
            while not buf.endswith(b"\n"):
                buf += await stream.receive_some(1000)
        return buf.decode().strip()


async def test_cli_link_control_power_hook_and_sigterm(tmp_path):
    link = str(tmp_path / "modem")
    ctl = str(tmp_path / "ctl.sock")
    os.symlink("/nonexistent/stale", link)  # a stale link is replaced
    proc = await trio.lowlevel.open_process(
        [
            PY,
            "-m",
            "modemd.emulator",
            "--tty-link",
            link,
            "--control",
            ctl,
            "--boot-delay",
            "0",
            "--qiact-delay",
            "0",
            "--hosts",
            "svc.test=127.0.0.9",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    try:
        with trio.fail_after(15):
            out = b""
            while not out.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1000)
                assert chunk, "emulator exited early"
                out += chunk
        tty = out.decode().strip()
        assert tty.startswith("/dev/pts/") and os.readlink(link) == tty
        assert os.path.exists(ctl)

        port = Port(link)
        try:
            await port.drain(0.3)  # boot URCs, if they came after pyserial's flush on open
            assert await port.ok("AT") == []
            assert await port.ok("AT+CGMM") == ["BG96"]
            assert (await _control(ctl, "status")).startswith("ok powered=1 hung=0 family=bg96")
            assert (await _control(ctl, "bogus")).startswith("error unknown command")
            assert await _control(ctl, "sendfail x") == "error expected an integer, got 'x'"

            # the power hook switches it off ...
            r = await trio.run_process(
                [PY, "-m", "modemd.emulator.power", "--control", ctl, "off"],
                env=ENV,
                capture_stdout=True,
                capture_stderr=True,
            )
            assert r.returncode == 0, r.stderr
            await port.write(b"AT\r")
            assert await port.drain(0.2) == b""
            # ... and a PWRKEY pulse boots it
            r = await trio.run_process(
                [PY, "-m", "modemd.emulator.power", "--control", ctl, "pwrkey"],
                env=ENV,
                capture_stdout=True,
                capture_stderr=True,
            )
            assert r.returncode == 0, r.stderr
            await port.expect(b"RDY\r\n")
            await port.expect(b"PB DONE\r\n")
            # faults over the control socket
            await port.ok("AT+QIACT=1")
            await port.ok('AT+QIOPEN=1,3,"TCP LISTENER","127.0.0.1",0,2222,0')
            assert await port.urc("+QIOPEN:") == "+QIOPEN: 3,0"
            answer = await _control(ctl, "listenport 2222")
            real = int(answer.split()[1])
            client = await trio.open_tcp_stream("127.0.0.1", real)
            async with client:
                assert (await port.urc("+QIURC:")).startswith('+QIURC: "incoming",0,3,')
                assert await _control(ctl, "close 0") == "ok"
                assert await port.urc("+QIURC:") == '+QIURC: "closed",0'
            assert await _control(ctl, "pdpdeact 1") == "ok"
            assert await port.urc("+QIURC:") == '+QIURC: "pdpdeact",1'
            assert await _control(ctl, "garbage 41420d0a") == "ok"
            await port.expect(b"AB\r\n")
            assert await _control(ctl, "hang on") == "ok"
            await port.write(b"AT\r")
            assert await port.drain(0.2) == b""
            assert await _control(ctl, "hang off") == "ok"
            await port.ok("AT+QIACT=1")
            await port.ok('AT+QIDNSGIP=1,"svc.test"')
            await port.urc('+QIURC: "dnsgip",0')
            assert await port.urc("+QIURC:") == '+QIURC: "dnsgip","127.0.0.9"'
        finally:
            port.close()

        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            rc = await proc.wait()
        assert rc == 0
        assert not os.path.lexists(link)
        assert not os.path.exists(ctl)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.stdout.aclose()
        await proc.stderr.aclose()


async def _run_cli(*args):
    return await trio.run_process(
        [PY, "-m", "modemd.emulator", *args],
        env=ENV,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_cli_user_errors_are_one_line_exit_2(tmp_path):
    regular = tmp_path / "file"
    regular.write_text("keep me")
    cases = [
        (["--tty-link", str(regular)], "exists and is not a symlink"),
        (["--tty-link", str(tmp_path / "x"), "--profile", "sim800"], "invalid choice"),
        (["--tty-link", str(tmp_path / "x"), "--hosts", "evil=10.0.0.1"], "loopback"),
        (["--tty-link", str(tmp_path / "no" / "dir")], "does not exist"),
        (["--tty-link", str(tmp_path / "x"), "--baud", "-5"], "must be >= 0"),
        (["--tty-link", str(tmp_path / "x"), "--control", str(regular)], "not a socket"),
        ([], "required"),
    ]
    async with trio.open_nursery() as nursery:
        results = {}

        async def one(i, args):
            results[i] = await _run_cli(*args)

        for i, (args, _) in enumerate(cases):
            nursery.start_soon(one, i, args)
    for i, (args, expect) in enumerate(cases):
        r = results[i]
        err = r.stderr.decode()
        assert r.returncode == 2, (args, err)
        assert err.count("\n") == 1 and expect in err and "Traceback" not in err, (args, err)
    assert regular.read_text() == "keep me"


async def test_power_hook_errors(tmp_path):
    r = await trio.run_process(
        [PY, "-m", "modemd.emulator.power", "--control", str(tmp_path / "none"), "on"],
        env=ENV,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert r.returncode == 1 and b"cannot reach emulator" in r.stderr
    r = await trio.run_process(
        [PY, "-m", "modemd.emulator.power", "--control", "x", "reboot"],
        env=ENV,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert r.returncode == 2
