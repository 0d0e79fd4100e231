#!/usr/bin/env python3
"""Print the settings table from the registry; --write puts it into docs/settings.rst
between the `.. settings-table-start` and `.. settings-table-end` comments."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ccs.gateway.settings import rst_table  # noqa: E402

START, END = ".. settings-table-start\n", ".. settings-table-end\n"
PAGE = ROOT / "docs" / "settings.rst"

if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        text = PAGE.read_text()
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        PAGE.write_text(f"{head}{START}\n{rst_table()}\n{END}{tail}")
    else:
        sys.stdout.write(rst_table())
