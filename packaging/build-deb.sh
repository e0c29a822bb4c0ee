#!/bin/sh
# Build the Debian package: dist/modemd_<version>_all.deb (see packaging/README.md).
#
#   packaging/build-deb.sh [--no-deps] [--outdir DIR]
#
# Stages the sources in a temporary directory, adds packaging/debian as debian/ plus the files
# debhelper installs by name (the unit from systemd/, the udev rule, sysusers.d and tmpfiles.d
# snippets), and runs dpkg-buildpackage -b. Missing build dependencies are installed with apt-get
# when running as root (unless --no-deps). Works from any directory; needs no network otherwise.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=$ROOT/dist
INSTALL_DEPS=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --no-deps) INSTALL_DEPS=no ;;
        --outdir) OUTDIR=$2; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

# pyenv (or a venv) earlier on PATH shadows Debian's python3, and pybuild would then run a python
# without the build modules ("No module named build", exit 13). Use the system's tools only.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYENV_VERSION

die() { echo "build-deb.sh: $*" >&2; exit 1; }

BUILD_DEPS="debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools dpkg-dev"
if ! command -v dpkg-buildpackage >/dev/null 2>&1 || \
   ! dpkg-checkbuilddeps "$ROOT/packaging/debian/control" >/dev/null 2>&1; then
    if [ "$INSTALL_DEPS" = yes ] && [ "$(id -u)" -eq 0 ]; then
        echo "build-deb.sh: installing build dependencies: $BUILD_DEPS" >&2
        # one word per package: POSIX sh has no arrays, the split is the point
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $BUILD_DEPS >&2 \
            || die "apt-get install failed (try: apt-get update)"
    else
        die "missing build dependencies; as root run: apt-get install -y --no-install-recommends $BUILD_DEPS"
    fi
fi

VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -n 1)
[ -n "$VERSION" ] || die "no version in pyproject.toml"
DEB_VERSION=$(dpkg-parsechangelog -l "$ROOT/packaging/debian/changelog" -S Version)
[ "${DEB_VERSION%-*}" = "$VERSION" ] || \
    die "packaging/debian/changelog is at $DEB_VERSION but pyproject.toml at $VERSION: add a changelog entry (dch -v $VERSION-1)"
for f in systemd/modemd.service systemd/modemd@.service config/modemd.toml README.md; do
    [ -f "$ROOT/$f" ] || die "$f is missing"
done

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/modemd-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT INT TERM
SRC=$STAGE/modemd-$VERSION
mkdir -p "$SRC"

# Only what the package is built from: no venvs, caches, tests or VCS data.
tar -C "$ROOT" -cf - \
    --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    pyproject.toml README.md modemd systemd config packaging \
    | tar -C "$SRC" -xf -
cp -r "$ROOT/packaging/debian" "$SRC/debian"
cp "$ROOT/systemd/modemd.service" "$SRC/debian/modemd.service"
cp "$ROOT/systemd/modemd@.service" "$SRC/debian/modemd@.service"
cp "$ROOT/packaging/udev/90-modemd.rules" "$SRC/debian/modemd.udev"
cp "$ROOT/packaging/sysusers.d/modemd.conf" "$SRC/debian/modemd.sysusers"
cp "$ROOT/packaging/tmpfiles.d/modemd.conf" "$SRC/debian/modemd.tmpfiles"

echo "build-deb.sh: building modemd $DEB_VERSION in $SRC" >&2
(cd "$SRC" && dpkg-buildpackage -us -uc -b) > "$STAGE/build.log" 2>&1 || {
    tail -n 40 "$STAGE/build.log" >&2
    die "dpkg-buildpackage failed (last 40 lines above)"
}

mkdir -p "$OUTDIR"
DEB=modemd_${DEB_VERSION}_all.deb
[ -f "$STAGE/$DEB" ] || die "dpkg-buildpackage did not produce $DEB"
cp "$STAGE/$DEB" "$OUTDIR/$DEB"
echo "$OUTDIR/$DEB"
