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

case "${1:-}" in
    demo)
        setup
        shift
        exec "$VENV/bin/resnet-explorer" demo "$@"
        ;;
    test)
        setup
        shift
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash quickstart.sh demo|test" >&2
        exit 2
        ;;
esac
