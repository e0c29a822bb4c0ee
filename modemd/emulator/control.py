r"""Line-based control socket, so another process can inject the emulator's faults.

One command per line, one answer line each: `ok[ <value>]` or `error <message>`.

    hang on|off            power off|on|pwrkey       pdpdeact [<ctx>]      close <connect_id>
    sendfail <n>           droprecv <n>              qiactfail <n>         qideactfail <n>
    garbage <hex>          openfail <code>           qisenderror <n>       qirderror <n>
    qirdfault garbage|reset|off                      sockets               count <prefix>
    qiact_delay <sec>      turnaround <sec>          baud <n>              interleave on|off
    listenport <port>      sim ready|absent          register on|off       host <name>=<ip>
    sim lock|unlock        sim pin <code>            sim puk <code>        sim status
    sim busy|notbusy
    radio <key>=<value> ...                          registration lose [<stat>] [<pdpdeact_after>|never]
    registration regain
    lose command <regex> [<count>] [glue]            lose prompt|final|answer <regex> [<count>]
    noise urc <N>          noise fragment <min>-<max>|off                noise garbage <n>
    noise flip <n>         noise glue <n>            noise sendfail <percent>
    noise seed <s>         noise off
    noise reboot <regex> [silent|nordy]              noise                 lost [list]
    stall <regex> <sec> [<count>]
    status
    help

`lose command`: the next <count> (default 1) command lines that re.fullmatch <regex> are lost on the
line (the module never sees them); with `glue` only their CR is lost, so their text is glued in front
of the next command line. `lose prompt|final|answer`: the module executes the next <count> matching
command lines but the `> ` of a QISEND / the final result line / everything printed for the command
never reaches the host. `stall <regex> <sec> [<count>]`: the module is busy for <sec> before it answers
the next <count> matching command lines (later lines wait their turn). The regex is one word (write a space as \s) and is case-sensitive; a count
of 0 cancels it.

Real-module noise (noise.py; every draw from the seed, 0 unless `noise seed <s>`):
`noise urc <N>`: one line boundary of the module's output in N gets an unsolicited real-module line
(+QIND: "csq",... +CTZE: ... +QGPSURC: ... ; 0: off). `noise fragment <min>-<max>`: the output reaches
the pty in pieces of min..max bytes (CR and LF split too; `off`). `noise garbage <n>`: n junk bytes
at the next line boundary. `noise flip <n>` / `noise glue <n>`: at the next n boundaries an
unsolicited line with a flipped byte / two of them glued into one line. `noise sendfail <percent>`:
that share of QISENDs answers SEND FAIL (its data dropped). `noise reboot <regex>
[silent|nordy]`: the next command line matching the regex restarts the module in the middle of it
(no answer; sockets and contexts gone, echo on again; nothing printed at boot, or the boot URCs
without RDY). `noise off`: all of it off. `noise` alone answers `ok <current settings>`.
`lost` answers `ok <n>` (losses so far: lost commands and answers, reboots); `lost list` answers
`ok <t>:<what> ...`, t the time.monotonic() of each loss (spaces in <what> written as _).
"""

from __future__ import annotations

import os
import socket as stdsocket
import stat
from typing import TYPE_CHECKING

import trio

from .config import ConfigError, check_hosts
from .noise import parse_range

if TYPE_CHECKING:  # pragma: no cover
    from .core import Emulator

HELP = (
    "commands: hang on|off, power off|on|pwrkey, pdpdeact [ctx], close <id>, sendfail <n>, "
    "droprecv <n>, qiactfail <n>, qideactfail <n>, garbage <hex>, openfail <code>, qisenderror <n>, "
    "qirderror <n>, qirdfault garbage|reset|off, sockets, count <prefix>, qiact_delay <s>, turnaround <s>, baud <n>, "
    "interleave on|off, listenport <port>, sim ready|absent|busy|notbusy|lock|unlock|status, sim pin|puk <code>, register on|off, host <name>=<ip>, "
    "radio <key>=<value>..., registration lose [stat] [seconds|never]|regain, "
    "lose command <regex> [count] [glue], lose prompt|final|answer <regex> [count], "
    "noise urc <N>|fragment <min>-<max>|garbage <n>|flip <n>|glue <n>|sendfail <percent>|seed <s>"
    "|off, "
    "noise reboot <regex> [silent|nordy], stall <regex> <sec> [count], lost [list], status"
)
MAX_LINE = 4096
KNOWN = {
    "hang", "power", "pdpdeact", "close", "sendfail", "droprecv", "qiactfail", "qideactfail", "garbage",
    "qiact_delay", "turnaround", "baud", "interleave", "listenport", "sim", "register", "host",
    "openfail", "qisenderror", "qirderror", "qirdfault", "lose", "noise", "radio", "registration",
    "stall",
}  # fmt: skip


def _onoff(arg: str) -> bool:
    if arg in ("on", "1", "true", "yes"):
        return True
    if arg in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"expected on|off, got {arg!r}")


def _int(arg: str) -> int:
    try:
        value = int(arg)
    except ValueError:
        raise ValueError(f"expected an integer, got {arg!r}") from None
    if value < 0:
        raise ValueError(f"expected an integer >= 0, got {arg!r}")
    return value


def _float(arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"expected a number, got {arg!r}") from None
    if not value >= 0:
        raise ValueError(f"expected a number >= 0, got {arg!r}")
    return value


def _lose(emu: Emulator, args: list[str]) -> None:
    """lose command <regex> [count] [glue] | lose prompt|final|answer <regex> [count]"""
    what = args[0].lower() if args else ""
    if what not in ("command", "prompt", "final", "answer") or not 2 <= len(args) <= 4:
        raise ValueError(
            "expected lose command <regex> [count] [glue] or lose prompt|final|answer <regex> [count]"
        )
    pattern, rest = args[1], args[2:]
    if what == "command":
        glue = bool(rest) and rest[-1].lower() == "glue"
        if glue:
            rest = rest[:-1]
        if len(rest) > 1:
            raise ValueError("lose command: expected <regex> [count] [glue]")
        emu.lose_command(pattern, _int(rest[0]) if rest else 1, glue)
        return
    if len(rest) > 1:
        raise ValueError(f"lose {what}: expected <regex> [count]")
    part = "all" if what == "answer" else what
    emu.lose_answer(pattern, _int(rest[0]) if rest else 1, part)


def _noise(emu: Emulator, args: list[str]) -> str:
    """noise [urc <N> | fragment <min>-<max>|off | garbage|flip|glue <n> | seed <s> | off |
    reboot <regex> [silent|nordy]]"""
    if not args:
        return "ok " + emu.noise.describe()
    what, rest = args[0].lower(), args[1:]
    if what == "off" and not rest:
        emu.noise_off()
    elif what == "reboot" and 1 <= len(rest) <= 2:
        emu.reboot_during(rest[0], rest[1].lower() if len(rest) > 1 else "silent")
    elif len(rest) != 1:
        raise ValueError(
            "expected noise urc <N>|fragment <min>-<max>|garbage <n>|flip <n>|glue <n>"
            "|sendfail <percent>|seed <s>|off"
            " or noise reboot <regex> [silent|nordy]"
        )
    elif what == "urc":
        emu.noise_urcs(_int(rest[0]))
    elif what == "fragment":
        if rest[0].lower() == "off":
            emu.noise_fragment(None)
        else:
            emu.noise_fragment(*parse_range(rest[0]))
    elif what == "garbage":
        emu.noise_garbage(_int(rest[0]))
    elif what in ("flip", "glue"):
        emu.noise_garble(**{what: _int(rest[0])})
    elif what == "seed":
        emu.noise_seed(_int(rest[0]))
    elif what == "sendfail":
        emu.send_fail_rate(_float(rest[0].removesuffix("%")) / 100)
    else:
        raise ValueError(
            f"noise: unknown kind {what!r} "
            "(urc, fragment, garbage, flip, glue, sendfail, seed, off, reboot)"
        )
    return "ok"


def _registration(emu: Emulator, args: list[str]) -> None:
    """registration lose [<stat>] [<seconds until pdpdeact>|never] | registration regain"""
    what = args[0].lower() if args else ""
    if what == "regain":
        emu.regain_registration()
        return
    if what != "lose":
        raise ValueError("expected: registration lose [stat] [seconds|never] | registration regain")
    stat = _int(args[1]) if len(args) > 1 else 2
    if len(args) > 2:
        after = None if args[2] in ("never", "none", "off") else _float(args[2])
        emu.lose_registration(stat, after)
    else:
        emu.lose_registration(stat)


async def run_command(emu: Emulator, line: str) -> str:
    """Execute one control line; returns the answer line (without newline)."""
    words = line.split()
    if not words:
        return "error empty command"
    cmd, args = words[0].lower(), words[1:]
    try:
        if cmd == "help":
            return "ok " + HELP
        if cmd == "status":
            return (
                f"ok powered={int(emu.powered)} hung={int(emu._hung)} family={emu.family.name} "
                f"baud={emu._baud} tty={emu.tty_path} boots={emu.boots}"
            )
        if cmd == "sockets":  # every connect_id the module holds, with its state
            session = emu._session
            socks = sorted(session.sockets.values(), key=lambda x: x.cid) if session else []
            return "ok " + " ".join(f"{x.cid}:{x.state}" for x in socks) if socks else "ok"
        if cmd == "lost" and len(args) <= 1:  # losses so far (lose / noise reboot)
            if args and args[0].lower() == "list":  # <monotonic time>:<what, spaces as _>
                pairs = zip(emu.lost_at, emu.lost, strict=True)
                return "ok " + " ".join(f"{t:.6f}:{w.replace(' ', '_')}" for t, w in pairs)
            return f"ok {len(emu.lost)}"
        if cmd == "count" and len(args) == 1:  # AT command lines received that start so
            return f"ok {sum(1 for c in emu.commands if c.upper().startswith(args[0].upper()))}"
        if cmd not in KNOWN:
            return f"error unknown command {cmd!r} ({HELP})"
        if cmd == "lose":
            _lose(emu, args)
            return "ok"
        if cmd == "noise":
            return _noise(emu, args)
        if cmd == "sim":
            return _sim(emu, args)
        if cmd == "radio":  # radio csq=20 ber=0 rsrp=-100 rsrq=-12 sinr=5 rat=LTE operator=My_Net
            emu.set_radio(**emu.radio.parse_words(args))
            return "ok"
        if cmd == "registration":
            _registration(emu, args)
            return "ok"
        if cmd == "stall":  # the regex keeps its case, like `lose`
            if not 2 <= len(args) <= 3:
                raise ValueError("expected stall <regex> <sec> [count]")
            emu.stall(args[0], _float(args[1]), _int(args[2]) if len(args) > 2 else 1)
            return "ok"
        if len(args) != 1 and not (cmd == "pdpdeact" and not args):
            raise ValueError(f"{cmd}: expected one argument")
        arg = args[0].lower() if args else ""
        if cmd == "hang":
            emu.hang(_onoff(arg))
        elif cmd == "power":
            if arg == "off":
                await emu.power_off()
            elif arg == "on":
                await emu.power_on()
            elif arg == "pwrkey":
                await emu.pwrkey()
            else:
                raise ValueError(f"expected off|on|pwrkey, got {arg!r}")
        elif cmd == "pdpdeact":
            emu.pdp_deactivate(_int(arg) if arg else 1)
        elif cmd == "close":
            emu.remote_close(_int(arg))
        elif cmd == "sendfail":
            emu.send_fail(_int(arg))
        elif cmd == "droprecv":
            emu.drop_recv_urc(_int(arg))
        elif cmd == "qiactfail":
            emu.qiact_fail(_int(arg))
        elif cmd == "qideactfail":
            emu.qideact_fail(_int(arg))
        elif cmd == "openfail":
            emu.open_fail(_int(arg))
        elif cmd in ("qisenderror", "qirderror"):
            emu.error_next(cmd[:-5], _int(arg))
        elif cmd == "qirdfault":
            emu.qird_fault(None if arg == "off" else arg)
        elif cmd == "garbage":
            try:
                emu.inject(bytes.fromhex(args[0]))
            except ValueError:
                raise ValueError(f"garbage: not hex: {args[0]!r}") from None
        elif cmd == "qiact_delay":
            emu.set_qiact_delay(_float(arg))
        elif cmd == "turnaround":
            emu.set_turnaround(_float(arg))

        elif cmd == "baud":
            emu.set_baud(_int(arg))
        elif cmd == "interleave":
            emu.interleave_urcs(_onoff(arg))
        elif cmd == "listenport":
            return f"ok {emu.module_listen_port(_int(arg))}"
        elif cmd == "register":
            emu.set_registered(_onoff(arg))
        elif cmd == "host":
            name, sep, ip = args[0].partition("=")
            if not sep:
                raise ValueError("expected <name>=<ip>")
            emu.set_hosts({**emu._hosts, **check_hosts({name: ip})})
        else:
            return f"error unknown command {cmd!r} ({HELP})"
    except (ValueError, LookupError) as exc:
        return f"error {exc}"
    return "ok"


def _sim(emu: Emulator, args: list[str]) -> str:
    """sim ready|absent (insert / remove the card), lock|unlock (its PIN lock), pin|puk <code>,
    status (state, attempts left, AT+CPIN= writes received)."""
    what = args[0] if args else ""
    if what in ("ready", "absent"):
        emu.set_sim_ready(what == "ready")
    elif what in ("busy", "notbusy"):
        emu.set_sim_busy(what == "busy")
    elif what in ("lock", "unlock"):
        emu.set_sim(locked=what == "lock")
    elif what in ("pin", "puk") and len(args) == 2:
        emu.set_sim(**{what: args[1]})
    elif what == "status":
        snap = emu.sim.snapshot()
        snap["state"] = snap["state"].replace(" ", "_")
        return "ok " + " ".join(f"{k}={v}" for k, v in snap.items())
    else:
        raise ValueError(f"expected ready|absent|busy|notbusy|lock|unlock|status|pin <code>|puk <code>, got {what!r}")
    return "ok"


def prepare_socket_path(path: str) -> None:
    """Remove a stale control socket; refuse to clobber anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"control socket path {path} exists and is not a socket")
    probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: stale
        return
    finally:
        probe.close()
    raise ConfigError(f"control socket {path} is in use by another process")


def open_control_socket(path: str) -> stdsocket.socket:
    """Create the listening unix socket now (errors are ConfigError, raised synchronously)."""
    prepare_socket_path(path)
    sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(8)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot create control socket {path}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


async def serve_control(
    emu: Emulator, listen_sock: stdsocket.socket, path: str, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    sock = trio.socket.from_stdlib_socket(listen_sock)
    try:
        ino = os.stat(path).st_ino
    except OSError:
        ino = None
    try:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await sock.accept()
                nursery.start_soon(_serve_client, emu, trio.SocketStream(conn))
    finally:
        sock.close()
        try:
            if ino is not None and os.stat(path).st_ino == ino:
                os.unlink(path)
        except OSError:
            pass


async def _serve_client(emu: Emulator, stream: trio.SocketStream) -> None:
    buf = bytearray()
    try:
        async with stream:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    raw, _, rest = bytes(buf).partition(b"\n")
                    buf = bytearray(rest)
                    line = raw.decode("utf-8", "replace").strip()
                    if not line:
                        continue
                    answer = await run_command(emu, line)
                    await stream.send_all(answer.encode() + b"\n")
                if len(buf) > MAX_LINE:
                    await stream.send_all(b"error line too long\n")
                    return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def send_control(path: str, line: str, timeout: float = 10.0) -> str:
    """Blocking client for scripts (power hook, shell use): one command, its answer line."""
    sock = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(line.strip().encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            data = sock.recv(4096)
            if not data:
                break
            buf += data
        return buf.decode("utf-8", "replace").strip()
    finally:
        sock.close()
