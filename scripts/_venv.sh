# Sourced by scripts/*: make .venv (once) with the package and its test, peer and examples extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CCS_VENV:-$ROOT/.venv}"
STAMP="$VENV/.ccs-installed"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.cfg" -nt "$STAMP" ]; then
    LOG="$VENV/install.log"
    echo "setting up $VENV (log: $LOG)" >&2
    if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
           "$VENV/bin/python" -m pip install -e "$ROOT[test,peers,examples]"; } >"$LOG" 2>&1; then
        tail -n 40 "$LOG" >&2
        echo "set-up failed; see $LOG" >&2
        exit 2
    fi
    touch "$STAMP"
fi
PY="$VENV/bin/python"
