#!/bin/sh
# One entry point for the README's quickstart and for CI.
#
#   scripts/dev.sh run [ARGS...]   set up, then `edge run ARGS...` (phantom demo by default)
#   scripts/dev.sh test [ARGS...]  set up with test extras, then ruff, mypy and pytest
#   scripts/dev.sh setup           set up only
#
# Set-up is idempotent: it installs the system library pyrealsense2 needs
# (libusb-1.0-0, with apt-get when run as root), creates .venv, installs the
# package when pyproject.toml changed, and builds the models when missing.
set -eu

cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3}

need_libusb() {
    ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'
}

setup() {
    extras=$1
    if need_libusb; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "setup: installing libusb-1.0-0 (needed by pyrealsense2)"
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
        else
            echo "setup: libusb-1.0-0 is missing; ask an administrator to run" >&2
            echo "       'apt-get install libusb-1.0-0', then run this again" >&2
            exit 2
        fi
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "setup: creating $VENV"
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
    fi
    stamp="$VENV/.setup-stamp"
    want="$(cat pyproject.toml | cksum) $extras"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "setup: installing the edge package ($extras)"
        "$VENV/bin/python" -m pip install -q -e ".[$extras]"
        echo "$want" > "$stamp"
    fi
    if "$VENV/bin/python" -c "import edge.models.commands" 2>/dev/null; then
        "$VENV/bin/edge" models fetch --quiet
    fi
}

cmd=${1:-run}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup test ;;
    run)
        setup test
        exec "$VENV/bin/edge" run "$@"
        ;;
    test)
        setup test
        echo "== ruff"; "$VENV/bin/ruff" check edge tests; "$VENV/bin/ruff" format --check edge tests
        echo "== mypy"; "$VENV/bin/mypy"
        echo "== pytest"; exec "$VENV/bin/pytest" "$@"
        ;;
    *) echo "usage: scripts/dev.sh run|test|setup [ARGS...]" >&2; exit 2 ;;
esac
