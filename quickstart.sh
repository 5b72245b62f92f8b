#!/usr/bin/env bash
# The README's two Quickstart commands:
#   bash quickstart.sh demo   set up .venv, then run the main job on the embedded default data
#   bash quickstart.sh test   set up .venv, then run the whole test suite
# Set-up is skipped when .venv is already installed from the same pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv

setup() {
    local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "== setting up $VENV with $("$PY" --version) (first run: installs PyTorch, a few minutes)"
        [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[test]"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

# A system tool a slow test needs, installed with apt when missing (as root), else one line
# saying how: ensure_tool COMMAND ENV_OVERRIDE DEBIAN_PACKAGE WHAT_NEEDS_IT
ensure_tool() {
    local cmd=$1 override=$2 pkg=$3 why=$4
    [ -n "${!override:-}" ] || command -v "$cmd" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's $pkg for $why"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; } \
            || echo "== could not install $pkg: $why will fail" >&2
    else
        echo "== $why needs $pkg: sudo apt-get install $pkg (or set $override=/path/to/$cmd)" >&2
    fi
}

case "${1:-}" in
    demo)
        setup
        shift
        exec "$VENV/bin/resnet-explorer" demo "$@"
        ;;
    test)
        setup
        ensure_tool chromium RESNET_EXPLORER_CHROMIUM chromium "the browser test (tests/test_browser.py)"
        ensure_tool bwrap RESNET_EXPLORER_BWRAP bubblewrap "the grading sandbox (tests/test_grading_attacks.py)"
        shift
        # on every core (pytest-xdist; -n0 after it runs in one process); torch's idle threads sleep
        # instead of spinning, as two workers share the cores
        OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} exec "$VENV/bin/python" -m pytest -n auto --dist loadfile "$@"
        ;;
    *)
        echo "usage: bash quickstart.sh demo|test" >&2
        exit 2
        ;;
esac
