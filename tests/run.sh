#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs it.
# System tools (real clients and checkers the tests drive): socat, curl, promtool, shellcheck,
# systemd-nspawn.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v socat >/dev/null || need+=(socat)
command -v curl >/dev/null || need+=(curl)
command -v promtool >/dev/null || need+=(prometheus)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v dh_python3 >/dev/null || need+=(dh-python debhelper pybuild-plugin-pyproject python3-all python3-setuptools)
command -v shellcheck >/dev/null || need+=(shellcheck)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,gpio]' 2>&1 | grep -v 'file:///opt' || true
.venv/bin/ruff check modemd tests bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
