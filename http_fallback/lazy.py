"""Package exports imported on first use (PEP 562).

A provider package's declaration is read whenever the settings load; with its client, model
and their dependencies imported eagerly by the package, every `ccs` command would pay for all
of them. `from http_fallback.apns import ApnsClient` still works: the name is imported then.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(package: str, names: dict[str, tuple[str, ...]]) -> tuple[Callable[[str], Any],
                                                                     list[str]]:
    """(__getattr__, __all__) for `package`, from {submodule: names it exports}."""
    where = {name: f"{package}.{module}" for module, found in names.items() for name in found}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__, sorted(where)
