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

# The browser test (tests/test_browser.py) drives Debian's chromium; install it when missing.
ensure_chromium() {
    [ -n "${RESNET_EXPLORER_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's chromium for the browser test"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "== could not install chromium: the browser test will fail" >&2
    else
        echo "== the browser test needs Chromium: sudo apt-get install chromium" \
             "(or set RESNET_EXPLORER_CHROMIUM=/path/to/chrome)" >&2
    fi
}

# The sandboxed grader (tests/test_grading_attacks.py) uses bubblewrap; install it when missing.
ensure_bubblewrap() {
    [ -n "${RESNET_EXPLORER_BWRAP:-}" ] || command -v bwrap >/dev/null 2>&1 && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian's bubblewrap for the grading sandbox"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } \
            || echo "== could not install bubblewrap: the grading sandbox tests will fail" >&2
    else
        echo "== the grading sandbox needs bubblewrap: sudo apt-get install bubblewrap" \
             "(or set RESNET_EXPLORER_BWRAP=/path/to/bwrap)" >&2
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
        ensure_chromium
        ensure_bubblewrap
        shift
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash quickstart.sh demo|test" >&2
        exit 2
        ;;
esac
