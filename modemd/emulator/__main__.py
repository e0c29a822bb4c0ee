"""python -m modemd.emulator --tty-link PATH [options]

Runs one emulated module on a fresh pty, symlinks the pty slave at PATH, prints the pty path, and
runs until SIGINT/SIGTERM; then removes the link (and the control socket).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import trio

from .config import ConfigError, EmulatorConfig
from .core import Emulator
from .families import FAMILIES

PROG = "python -m modemd.emulator"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        sys.stderr.write(f"{PROG}: error: {message}\n")
        raise SystemExit(2)


def _host(text: str) -> tuple[str, str]:
    name, sep, ip = text.partition("=")
    if not sep or not name or not ip:
        raise argparse.ArgumentTypeError(f"expected name=ip, got {text!r}")
    return name, ip


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _pos_int(text: str) -> int:
    value = _nonneg_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Run a simulated Quectel module on a pty.")
    p.add_argument(
        "--tty-link", required=True, metavar="PATH", help="symlink to create for the pty slave"
    )
    p.add_argument("--profile", "--family", dest="family", default="bg96", choices=sorted(FAMILIES))
    p.add_argument("--baud", type=_nonneg_int, default=0, help="line rate in bit/s (0 = unlimited)")
    p.add_argument("--turnaround", type=_nonneg_float, default=0.0, metavar="SEC")
    p.add_argument("--qiact-delay", type=_nonneg_float, default=0.5, metavar="SEC")
    p.add_argument("--boot-delay", type=_nonneg_float, default=0.2, metavar="SEC")
    p.add_argument("--rx-buffer", type=_pos_int, default=64 * 1024, metavar="BYTES")
    p.add_argument("--tx-buffer", type=_pos_int, default=16 * 1024, metavar="BYTES")
    p.add_argument("--control", metavar="PATH", help="unix socket for fault injection / power hook")
    p.add_argument(
        "--hosts",
        type=_host,
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=IP",
        help="DNS entries (loopback only); localhost=127.0.0.1 is always there",
    )
    p.add_argument("--sim-pin", metavar="PIN", help="lock the SIM with this PIN (4-8 digits)")
    p.add_argument("--sim-puk", default="12345678", metavar="PUK", help="the SIM's PUK (8 digits)")
    p.add_argument("--no-sim", action="store_true", help="no SIM card inserted")
    p.add_argument(
        "--power-off", action="store_true", help="start powered off (boot on 'power on'/pwrkey)"
    )
    return p


def make_link(link: str, target: str) -> None:
    """Create/replace the symlink `link` -> `target`; never clobber a non-link."""
    if os.path.lexists(link) and not os.path.islink(link):
        raise ConfigError(f"--tty-link {link} exists and is not a symlink; refusing to replace it")
    parent = os.path.dirname(os.path.abspath(link))
    if not os.path.isdir(parent):
        raise ConfigError(f"--tty-link {link}: directory {parent} does not exist")
    tmp = f"{link}.tmp{os.getpid()}"
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConfigError(f"--tty-link {link}: {exc.strerror}") from None


def remove_link(link: str, target: str) -> None:
    try:
        if os.path.islink(link) and os.readlink(link) == target:
            os.unlink(link)
    except OSError:
        pass


async def run(args: argparse.Namespace) -> None:
    hosts = {"localhost": "127.0.0.1", **dict(args.hosts)}
    cfg = EmulatorConfig(
        family=args.family,
        baud=args.baud,
        turnaround=args.turnaround,
        qiact_delay=args.qiact_delay,
        boot_delay=args.boot_delay,
        hosts=hosts,
        rx_buffer=args.rx_buffer,
        tx_buffer=args.tx_buffer,
        power_on=not args.power_off,
        control=args.control,
        sim_ready=not args.no_sim,
        sim_locked=args.sim_pin is not None,
        sim_pin=args.sim_pin or "1234",
        sim_puk=args.sim_puk,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with Emulator.open(cfg) as emu:
            make_link(args.tty_link, emu.tty_path)
            try:
                print(emu.tty_path, flush=True)
                extra = f", control {args.control}" if args.control else ""
                sys.stderr.write(
                    f"{PROG}: {cfg.family} on {emu.tty_path} (link {args.tty_link}{extra})\n"
                )
                async for _ in signals:
                    break
            finally:
                remove_link(args.tty_link, emu.tty_path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        trio.run(run, args)
    except ConfigError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
