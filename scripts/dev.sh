#!/bin/sh
# One entry point for the README's quickstart and for CI.
#
#   scripts/dev.sh run [ARGS...]   set up, then `edge run ARGS...` (phantom demo by default)
#   scripts/dev.sh test [ARGS...]  set up, then ruff, mypy and pytest (two worker processes)
#   scripts/dev.sh setup           set up only
#   scripts/dev.sh lock            refresh uv.lock to the newest allowed versions (then run test)
#
# Set-up is idempotent: it installs the system packages the tests and pyrealsense2
# need (with apt-get when run as root), installs the pinned uv (by SHA-256, from
# scripts/uv-requirements.txt) into .tools/uv, makes .venv exactly what uv.lock
# says (`uv sync --locked`: exact versions and hashes, nothing else), and builds
# the models when missing.
set -eu

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TOOLS=.tools/uv
UV=$TOOLS/bin/uv
# Never download a Python of uv's own: use the machine's.
export UV_PYTHON_DOWNLOADS=never

missing_packages() {
    ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || echo libusb-1.0-0
    command -v systemd-analyze >/dev/null 2>&1 || echo systemd
}

system_packages() {
    need=${1:-$(missing_packages | tr '\n' ' ')}
    [ -z "$need" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing $need"
        apt-get update -qq >/dev/null
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
    else
        echo "setup: missing system packages: $need; ask an administrator to run" >&2
        echo "       'apt-get install $need', then run this again" >&2
        exit 2
    fi
}

uv_tool() {
    want="uv $(sed -n 's/^uv==\([0-9.]*\).*/\1/p' scripts/uv-requirements.txt)"
    if [ -x "$UV" ] && "$UV" --version 2>/dev/null | grep -q "^$want\b"; then
        return 0
    fi
    echo "setup: installing $want into $TOOLS"
    rm -rf "$TOOLS"
    # Debian's own python3 makes venvs only with python3-venv installed.
    "$PY" -m venv "$TOOLS" 2>/dev/null || { rm -rf "$TOOLS"; system_packages python3-venv; "$PY" -m venv "$TOOLS"; }
    "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check \
        --require-hashes --no-deps -r scripts/uv-requirements.txt
}

setup() {
    system_packages
    uv_tool
    # A venv made by another tool keeps packages uv would leave alone (pip's seed):
    # start again with one uv makes.
    if [ -f .venv/pyvenv.cfg ] && ! grep -q '^uv = ' .venv/pyvenv.cfg; then
        echo "setup: .venv was not made by uv; making it again"
        rm -rf .venv
    fi
    # --locked: refuse to run when pyproject.toml and uv.lock disagree (relock with
    # `scripts/dev.sh lock`); the environment is made to match the lock exactly.
    "$UV" sync --quiet --locked --extra test --python "$PY"
    .venv/bin/edge models fetch --quiet
}

cmd=${1:-run}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup) setup ;;
    run)
        setup
        exec .venv/bin/edge run "$@"
        ;;
    test)
        setup
        echo "== ruff"; .venv/bin/ruff check edge tests; .venv/bin/ruff format --check edge tests
        echo "== mypy"; .venv/bin/mypy
        # Two worker processes: the project's machine kind has two cores, and most tests
        # keep one busy at most (489 s in one process, 273 s in two).
        # `scripts/dev.sh test -n 0 ...` runs in one process (e.g. for --pdb).
        echo "== pytest"; exec .venv/bin/pytest -n 2 "$@"
        ;;
    lock)
        system_packages
        uv_tool
        "$UV" lock --upgrade --python "$PY"
        echo "lock: uv.lock refreshed; now run 'scripts/dev.sh test' and commit uv.lock if it passes"
        ;;
    *) echo "usage: scripts/dev.sh run|test|setup|lock [ARGS...]" >&2; exit 2 ;;
esac
