"""modemctl: talk to a running modemd over its control socket.

    modemctl [--socket PATH | --instance NAME] [--json] [--timeout S] COMMAND [--json]

    status            state, module, operator, signal, IP, uptime, connection counts
    connections       open module sockets as a table
    ping HOST         ICMP ping through the module (AT+QPING); --context ID: through that
                      PDP context (default: the first one configured)
    resolve HOST      DNS lookup through the module (AT+QIDNSGIP); --context ID as for ping
    ntp [SERVER]      the time from an NTP server, asked by the module (AT+QNTP; default
                      pool.ntp.org, --port N, --context ID): prints it as UTC ISO 8601, so
                      `date -u -s "$(modemctl ntp)"` sets a gateway's clock from the cellular link
    reconnect         re-activate the PDP contexts (privileged)
    reboot [--force]  reboot the module (privileged; --force skips the back-off)
    reload            re-read the configuration (privileged)
    at 'AT+CSQ'       send one AT command (privileged)

The socket is --socket, else --instance NAME's /run/modemd/NAME/control.sock, else $MODEMD_CONTROL,
else /run/modemd/control.sock. Every failure is one line on stderr and exit status 1 (2 for usage
errors); never a traceback. `modemctl at` exits 1 when the module answers ERROR or +CME/+CMS ERROR.

The result shapes printed here (all keys optional; unknown keys are shown as they are):
  status:      {"state", "model", "firmware", "imei", "operator", "technology", "registration": {domain:
               text}, "signal": {"rssi_dbm", "csq", "rsrp_dbm", "rsrq_db", "sinr_db"}, "pdp":
               {"context_id", "up", "address", "addresses", "apn", "auth", "ip_type", "activations",
               "pending": [keys a reload changed, not in effect yet]} (the first, default context),
               "contexts": [the same for every configured context, in file order], "uptime_seconds", "module_uptime_seconds",
               "connections": {"active", "queued", "connect_ids_in_use", "connect_ids_available"},
               "sim": {"state", "pin_attempts_left", "puk_attempts_left"}, "reboots", "next_reboot":
               unix time or null, "version"}
  connections: [{"connect_id", "forward", "local_peer", "remote", "bytes_in", "bytes_out",
               "age_seconds", "state"}]  (bytes_in: module -> local client; bytes_out: the other way)
  ping:        {"host", "context_id", "replies": [{"address", "bytes", "time_ms", "ttl"}], "summary": {"sent",
               "received", "lost", "min_ms", "max_ms", "avg_ms"}}
  resolve:     {"host", "context_id", "addresses": [...]}
  ntp:         {"server", "port", "context_id", "utc": "2026-07-02T14:27:52Z", "unix", "zone_minutes":
               the module's zone field (minutes east of UTC), "module_time": its text}
  at:          {"lines": [...], "final": "OK"}
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any, NoReturn, TextIO

from .instance import check_instance, control_socket

DEFAULT_SOCKET = control_socket()
PROTOCOL_VERSION = 1
MAX_ANSWER = 16 * 1024 * 1024

#: Default seconds to wait for an answer, per command (AT+QIACT may take 150 s, QPING 4 x timeout).
TIMEOUTS = {"at": 200.0, "reboot": 200.0, "reconnect": 200.0, "ping": 120.0, "resolve": 90.0,
            "ntp": 140.0}
DEFAULT_TIMEOUT = 30.0


class CtlError(Exception):
    """One line for stderr."""


def socket_path(arg: str | None, instance: str = "") -> str:
    """--socket, else --instance's socket, else $MODEMD_CONTROL, else the default."""
    if arg:
        return arg
    if instance:
        return control_socket(instance)
    return os.environ.get("MODEMD_CONTROL") or DEFAULT_SOCKET


def request(path: str, cmd: str, args: dict[str, Any] | None = None, *,
            timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Send one request; return its result or raise CtlError with a readable reason."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise CtlError(f"modemd is not running (no control socket at {path})") from None
        except ConnectionRefusedError:
            raise CtlError(f"modemd is not running (nothing listens on {path})") from None
        except PermissionError:
            raise CtlError(
                f"permission denied on {path} (run as root or as a member of the modemd group)"
            ) from None
        except TimeoutError:
            raise CtlError(f"modemd does not accept connections on {path}") from None
        except OSError as exc:
            raise CtlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
        line = json.dumps({"v": PROTOCOL_VERSION, "id": 1, "cmd": cmd, "args": args or {}}) + "\n"
        buf = bytearray()
        try:
            sock.sendall(line.encode())
            while b"\n" not in buf:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                data = sock.recv(65536)
                if not data:
                    raise CtlError("modemd closed the connection without an answer")
                buf += data
                if len(buf) > MAX_ANSWER:
                    raise CtlError("answer from modemd is too long")
        except TimeoutError:
            raise CtlError(f"no answer from modemd within {timeout:g} s") from None
        except OSError as exc:
            raise CtlError(f"connection to modemd failed: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(buf[: buf.index(b"\n")])
    except ValueError:
        raise CtlError("invalid answer from modemd (not JSON)") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise CtlError("invalid answer from modemd")
    if not answer["ok"]:
        raise CtlError(str(answer.get("error") or "modemd reported an error"))
    return answer.get("result")


# -- formatting -------------------------------------------------------------------------------------
def _dash(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def human_duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0:
        return "-"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h {m}m"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"


def human_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return _dash(n)
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n}"  # pragma: no cover


def format_signal(sig: Any) -> str:
    if not isinstance(sig, dict):
        return _dash(sig)
    parts = []
    if sig.get("rssi_dbm") is not None:
        parts.append(f"RSSI {_dash(sig['rssi_dbm'])} dBm")
    if sig.get("csq") is not None:
        parts.append(f"CSQ {_dash(sig['csq'])}")
    for key, name, unit in (("rsrp_dbm", "RSRP", "dBm"), ("rsrq_db", "RSRQ", "dB"),
                            ("sinr_db", "SINR", "dB")):
        if sig.get(key) is not None:
            parts.append(f"{name} {_dash(sig[key])} {unit}")
    return ", ".join(parts) or "-"


_STATUS_KEYS = (
    "state", "version", "model", "firmware", "imei", "operator", "technology", "registration",
    "signal", "pdp", "contexts", "uptime_seconds", "module_uptime_seconds", "connections", "reboots",
    "next_reboot", "sim", "registration_losses",
)


def format_sim(sim: dict) -> str:
    """The SIM's state and attempts left: "sim_pin_rejected (2 PIN, 10 PUK attempts left)"."""
    left = [f"{sim[k]} {what}" for k, what in (("pin_attempts_left", "PIN"),
                                               ("puk_attempts_left", "PUK")) if sim.get(k) is not None]
    return _dash(sim.get("state")) + (f" ({', '.join(left)} attempts left)" if left else "")


def format_context(pdp: Any, several: bool = False) -> str:
    """One context: "10.0.0.2 (context 1, APN internet)"; the IP type too when there are several."""
    if not isinstance(pdp, dict):
        return _dash(pdp)
    text = _dash(pdp.get("address")) if pdp.get("up") else "down"
    extra = [f"context {pdp['context_id']}"] if pdp.get("context_id") is not None else []
    if several and pdp.get("ip_type"):
        extra.append(str(pdp["ip_type"]))
    if pdp.get("apn"):
        extra.append(f"APN {pdp['apn']}")
    if pdp.get("pending"):  # a reload's [pdp] keys, not in effect until the context re-cycles
        extra.append(f"reload pending: {', '.join(map(str, pdp['pending']))}")
    return text + (f" ({', '.join(extra)})" if extra else "")


def format_status(st: Any) -> str:
    if not isinstance(st, dict):
        return _dash(st)
    rows: list[tuple[str, str]] = [("State", _dash(st.get("state")))]
    module = " ".join(_dash(st[k]) for k in ("model", "firmware") if st.get(k))
    if st.get("imei"):
        module += f" (IMEI {st['imei']})"
    rows.append(("Module", module or "-"))
    if isinstance(st.get("sim"), dict):
        rows.append(("SIM", format_sim(st["sim"])))
    op = _dash(st.get("operator"))
    if st.get("technology"):
        op += f" ({st['technology']})"
    rows.append(("Operator", op))
    reg = st.get("registration")
    if isinstance(reg, dict) and reg:
        text = ", ".join(f"{k} {_dash(v)}" for k, v in reg.items())
        if st.get("registration_losses"):
            text += f" (lost {st['registration_losses']} times since start)"
        rows.append(("Registration", text))
    elif reg is not None:
        rows.append(("Registration", _dash(reg)))
    rows.append(("Signal", format_signal(st.get("signal"))))
    contexts = st.get("contexts")
    if not (isinstance(contexts, list) and contexts):
        contexts = [st.get("pdp")]
    for pdp in contexts:  # one IP row per context, the default (first) one first
        rows.append(("IP", format_context(pdp, several=len(contexts) > 1)))
    uptime = human_duration(st.get("uptime_seconds"))
    if st.get("module_uptime_seconds") is not None:
        uptime += f" (module {human_duration(st['module_uptime_seconds'])})"
    rows.append(("Uptime", uptime))
    conns = st.get("connections")
    if isinstance(conns, dict):
        text = f"{_dash(conns.get('active'))} active"
        if conns.get("queued"):
            text += f", {conns['queued']} queued"
        if conns.get("connect_ids_available") is not None:
            text += f", {conns['connect_ids_available']} connect_ids free"
        rows.append(("Connections", text))
    elif conns is not None:
        rows.append(("Connections", _dash(conns)))
    if st.get("reboots") is not None:
        rows.append(("Reboots", _dash(st["reboots"])))
    nxt = st.get("next_reboot")
    if isinstance(nxt, (int, float)) and nxt > 0:
        rows.append(("Next reboot", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(nxt))
                     + f" (in {human_duration(nxt - time.time())})"))
    if st.get("version"):
        rows.append(("modemd", _dash(st["version"])))
    for key, value in st.items():
        if key not in _STATUS_KEYS:
            rows.append((key.replace("_", " ").capitalize(), _dash(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows)


CONNECTION_COLUMNS = (
    ("connect_id", "ID"), ("forward", "FORWARD"), ("local_peer", "LOCAL PEER"),
    ("remote", "REMOTE"), ("bytes_in", "IN"), ("bytes_out", "OUT"), ("age_seconds", "AGE"),
    ("state", "STATE"),
)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def format_connections(conns: Any) -> str:
    if isinstance(conns, dict) and isinstance(conns.get("connections"), list):
        conns = conns["connections"]
    if not isinstance(conns, list):
        return _dash(conns)
    if not conns:
        return "no connections"
    rows = []
    for c in conns:
        if not isinstance(c, dict):
            rows.append([_dash(c)] + [""] * (len(CONNECTION_COLUMNS) - 1))
            continue
        row = []
        for key, _ in CONNECTION_COLUMNS:
            value = c.get(key)
            if key in ("bytes_in", "bytes_out"):
                row.append(human_bytes(value))
            elif key == "age_seconds":
                row.append(human_duration(value))
            else:
                row.append(_dash(value))
        rows.append(row)
    return format_table([h for _, h in CONNECTION_COLUMNS], rows)


def format_ping(res: Any) -> str:
    if not isinstance(res, dict):
        return _dash(res)
    out = []
    for r in res.get("replies") or []:
        if isinstance(r, dict):
            out.append(f"reply from {_dash(r.get('address'))}: bytes={_dash(r.get('bytes'))} "
                       f"time={_dash(r.get('time_ms'))} ms ttl={_dash(r.get('ttl'))}")
        else:
            out.append(_dash(r))
    s = res.get("summary")
    if isinstance(s, dict):
        out.append(f"--- {_dash(res.get('host'))} ping: {_dash(s.get('sent'))} sent, "
                   f"{_dash(s.get('received'))} received, {_dash(s.get('lost'))} lost; "
                   f"rtt min/avg/max {_dash(s.get('min_ms'))}/{_dash(s.get('avg_ms'))}/"
                   f"{_dash(s.get('max_ms'))} ms")
    return "\n".join(out) or format_generic(res)


def format_resolve(res: Any) -> str:
    if isinstance(res, dict) and isinstance(res.get("addresses"), list):
        return "\n".join(str(a) for a in res["addresses"]) or "no addresses"
    return format_generic(res)


def format_ntp(res: Any) -> str:
    if isinstance(res, dict) and isinstance(res.get("utc"), str):
        return res["utc"]
    return format_generic(res)


def format_at(res: Any) -> str:
    if isinstance(res, dict) and ("lines" in res or "final" in res):
        lines = [str(x) for x in res.get("lines") or []]
        if res.get("final"):
            lines.append(str(res["final"]))
        return "\n".join(lines)
    return format_generic(res)


def format_generic(res: Any) -> str:
    if res is None or res is True:
        return "ok"
    if isinstance(res, str):
        return res
    if isinstance(res, dict):
        if not res:
            return "ok"
        if set(res) == {"message"}:
            return str(res["message"])
        width = max(len(str(k)) for k in res)
        return "\n".join(f"{str(k) + ':':<{width + 1}} {_dash(v)}" for k, v in res.items())
    if isinstance(res, list):
        return "\n".join(_dash(x) for x in res)
    return _dash(res)


FORMATTERS = {
    "status": format_status,
    "connections": format_connections,
    "ping": format_ping,
    "resolve": format_resolve,
    "ntp": format_ntp,
    "at": format_at,
}


# -- command line ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"modemctl: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="modemctl", description="Control a running modemd.")
    p.add_argument("--socket", metavar="PATH",
                   help=f"control socket (default: $MODEMD_CONTROL or {DEFAULT_SOCKET})")
    p.add_argument("--instance", "-i", metavar="NAME", default="",
                   help="the modemd of unit modemd@NAME (socket /run/modemd/NAME/control.sock)")
    p.add_argument("--json", action="store_true", help="print the raw JSON result")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds to wait for the answer (default depends on the command)")
    # `--json` also after the command (`modemctl status --json`): SUPPRESS keeps the main value
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                           help="print the raw JSON result")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, parents=[json_flag])

    add("status", "daemon and module summary")
    add("connections", "open module sockets")
    context = argparse.ArgumentParser(add_help=False)
    context.add_argument("--context", type=int, metavar="ID", dest="context_id",
                         help="the PDP context (context_id) to use; default: the first configured")
    sp = sub.add_parser("ping", help="ping a host through the module", parents=[json_flag, context])
    sp.add_argument("host")
    sp.add_argument("-c", "--count", type=int, help="number of echo requests")
    sp = sub.add_parser("resolve", help="resolve a host name through the module",
                        parents=[json_flag, context])
    sp.add_argument("host")
    sp = sub.add_parser("ntp", help="the time from an NTP server, through the module (UTC)",
                        parents=[json_flag, context])
    sp.add_argument("host", nargs="?", metavar="SERVER", help="default: pool.ntp.org")
    sp.add_argument("--port", type=int, help="the server's UDP port (default 123)")
    add("reconnect", "re-activate the PDP contexts")
    sp = add("reboot", "reboot the module")
    sp.add_argument("--force", action="store_true", help="reboot now, ignoring the back-off")
    add("reload", "re-read the configuration")
    sp = add("at", "send one AT command, e.g. modemctl at 'AT+CSQ'")
    sp.add_argument("command")
    add("version", "protocol and daemon version")
    return p


def command_args(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.cmd in ("ping", "resolve", "ntp"):
        args: dict[str, Any] = {} if ns.host is None else {"host": ns.host}
        if getattr(ns, "count", None) is not None:
            args["count"] = ns.count
        if getattr(ns, "port", None) is not None:
            args["port"] = ns.port
        if ns.context_id is not None:
            args["context_id"] = ns.context_id
        return args
    if ns.cmd == "reboot":
        return {"force": bool(ns.force)}
    if ns.cmd == "at":
        return {"command": ns.command}
    return {}


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    ns = build_parser().parse_args(argv)
    if ns.cmd == "at" and ("\r" in ns.command or "\n" in ns.command):
        print("modemctl: error: the AT command must be one line", file=stderr)
        return 2
    if ns.cmd == "ping" and ns.count is not None and ns.count < 1:
        print("modemctl: error: --count must be at least 1", file=stderr)
        return 2
    if ns.cmd == "ntp" and ns.port is not None and not 1 <= ns.port <= 65535:
        print("modemctl: error: --port must be from 1 to 65535", file=stderr)
        return 2
    if ns.instance:
        try:
            check_instance(ns.instance)
        except ValueError as exc:
            print(f"modemctl: error: {exc}", file=stderr)
            return 2
    path = socket_path(ns.socket, ns.instance)
    timeout = ns.timeout if ns.timeout is not None else TIMEOUTS.get(ns.cmd, DEFAULT_TIMEOUT)
    if timeout <= 0:
        print("modemctl: error: --timeout must be positive", file=stderr)
        return 2
    try:
        result = request(path, ns.cmd, command_args(ns), timeout=timeout)
        if ns.json:
            text = json.dumps(result, indent=2, sort_keys=True)
        else:
            text = FORMATTERS.get(ns.cmd, format_generic)(result)
        print(text, file=stdout)
        stdout.flush()
        if ns.cmd == "at" and _at_failed(result):
            return 1  # the module answered ERROR / +CME ERROR: scripts must see it
    except CtlError as exc:
        print(f"modemctl: {exc}", file=stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `modemctl connections | head`
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())  # no 2nd error at exit
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except Exception as exc:  # never a traceback
        print(f"modemctl: unexpected error: {exc!r}", file=stderr)
        return 1
    return 0


def _at_failed(result: Any) -> bool:
    """The final result of `modemctl at` is an error code (ERROR, +CME ERROR, +CMS ERROR ...)."""
    final = str(result.get("final", "")) if isinstance(result, dict) else ""
    return final in ("ERROR", "NO CARRIER") or final.startswith(("+CME ERROR", "+CMS ERROR"))


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
