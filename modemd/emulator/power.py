"""Power hook for a daemon's `command` power backend:

    python -m modemd.emulator.power --control SOCK off|on|pwrkey

Exit 0 when the emulator did it, 1 when it could not be reached or refused, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import sys

from .control import send_control

PROG = "python -m modemd.emulator.power"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        sys.stderr.write(f"{PROG}: error: {message}\n")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(
        prog=PROG, description="Switch an emulated module's power through its control socket."
    )
    p.add_argument("--control", required=True, metavar="SOCK", help="the emulator's control socket")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SEC")
    p.add_argument("action", choices=("off", "on", "pwrkey"))
    args = p.parse_args(argv)
    try:
        answer = send_control(args.control, f"power {args.action}", timeout=args.timeout)
    except OSError as exc:
        sys.stderr.write(
            f"{PROG}: cannot reach emulator at {args.control}: {exc.strerror or exc}\n"
        )
        return 1
    if answer != "ok":
        sys.stderr.write(f"{PROG}: emulator refused: {answer or 'no answer'}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
