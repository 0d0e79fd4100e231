"""No import circles inside ccs/ or http_fallback/ (TYPE_CHECKING and in-function imports count)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import import_graph  # noqa: E402


def test_no_import_cycles() -> None:
    graph = import_graph.edges(import_graph.modules())
    circles = [import_graph.shortest_cycle(graph, c) for c in import_graph.components(graph)]
    assert circles == []


def test_finds_each_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "ccs"
    (pkg / "sub").mkdir(parents=True)
    (tmp_path / "http_fallback").mkdir()
    (tmp_path / "http_fallback" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from ccs.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .c import x\n")
    (pkg / "sub" / "c.py").write_text("from .. import a\nx = 1\n")
    (pkg / "d.py").write_text("import ccs.sub.c\n")
    graph = import_graph.edges(import_graph.modules(tmp_path))
    assert graph["ccs.a"] == {"ccs.sub", "ccs.sub.b"}
    assert graph["ccs.sub.b"] == {"ccs.sub.c"}
    assert graph["ccs.sub.c"] == {"ccs.a"}
    assert graph["ccs.d"] == {"ccs.sub", "ccs.sub.c"}
    assert import_graph.cycles(tmp_path) == [["ccs.a", "ccs.sub.b", "ccs.sub.c", "ccs.a"]]
    assert import_graph.package_graph(graph) == {"ccs": set(), "ccs.a": {"ccs.sub"},
                                                 "ccs.sub": {"ccs.a"}, "ccs.d": {"ccs.sub"},
                                                 "http_fallback": set()}
