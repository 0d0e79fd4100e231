#!/usr/bin/env python3
"""Print the README's settings table from the registry (tests check the README agrees)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccs.settings import rst_table  # noqa: E402

if __name__ == "__main__":
    sys.stdout.write(rst_table())
