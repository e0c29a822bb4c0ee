"""Command line: `modemd --config FILE`, `modemd --emulate [--config FILE]`, `modemd check-config FILE`.

Errors a user can cause (bad config, missing port, permission denied, port busy, a socket path in use)
end in one line on stderr naming the fix and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .instance import check_instance, config_file

DEFAULT_CONFIG = config_file()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modemd",
        description="Quectel module TCP/IP stack as ordinary local sockets.",
    )
    parser.add_argument("--config", "-c", help=f"configuration file (default {DEFAULT_CONFIG}, "
                        "with --instance NAME /etc/modemd/NAME.toml)")
    parser.add_argument(
        "--instance", "-i", default=None, type=_instance, metavar="NAME",
        help="one of several modemd on this gateway (unit modemd@NAME): its config defaults to "
             "/etc/modemd/NAME.toml and its control socket to /run/modemd/NAME/control.sock",
    )
    parser.add_argument(
        "--emulate", action="store_true",
        help="run on the built-in module emulator instead of a real port (no hardware needed)",
    )
    parser.add_argument(
        "--emulate-profile", default=None,
        help="module family the emulator plays (bg95, generic, bc25, bg96, rg500u)",
    )
    parser.add_argument("--emulate-baud", type=int, default=0, help="emulated line rate, 0 = unlimited")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"modemd {__version__}")
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-config", help="validate a configuration file and print every error")
    check.add_argument("file")
    check.add_argument("--emulate", action="store_true", help="allow an empty modem.port")
    return parser


def _instance(name: str) -> str:
    try:
        return check_instance(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_config_main(path: str, emulate: bool) -> int:
    from .config import check_config

    errors = check_config(path, emulate=emulate) or _cannot_serve(path, emulate)
    if errors:
        for line in errors:
            print(line, file=sys.stderr)
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def _cannot_serve(path: str, emulate: bool) -> list[str]:
    """What the configured family cannot do, as the daemon says it at start (one line); with
    model = "auto" the daemon checks once the module has identified itself."""
    from .capabilities import check, known_profile
    from .config import load_config
    from .profiles import UnsupportedConfig

    cfg = load_config(path, emulate=emulate)
    profile = known_profile(cfg, None)
    if profile is None:
        return []
    try:
        check(cfg, profile, f'modem.model = "{cfg.modem.model}"')
    except UnsupportedConfig as exc:
        return [str(exc)]
    return []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config_main(args.file, args.emulate)
    from .daemon import UserError, run_main

    try:
        return run_main(args)
    except UserError as exc:
        print(f"modemd: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
