# Sourced by scripts/*: make .venv (once) with the package and its test and peer extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CCS_VENV:-$ROOT/.venv}"
STAMP="$VENV/.ccs-installed"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.cfg" -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test,peers]"
    touch "$STAMP"
fi
PY="$VENV/bin/python"
