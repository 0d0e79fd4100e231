"""No import circles inside ccs/ or http_fallback/ (TYPE_CHECKING and in-function imports count)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import click  # noqa: E402
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


def test_layers_are_one_way() -> None:
    graph = import_graph.edges(import_graph.modules())
    assert import_graph.layer_breaks(graph) == []
    assert {import_graph.layer_of(m)[0] for m in graph} == {
        name for name, _, _ in import_graph.LAYERS}  # every layer holds modules


def test_a_layer_break_is_reported(tmp_path: Path) -> None:
    for pkg in ("ccs", "ccs/transport", "ccs/xmpp", "ccs/gateway", "http_fallback"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "ccs" / "outcome.py").write_text("")
    (tmp_path / "ccs" / "transport" / "t.py").write_text("def f():\n    import ccs.gateway.g\n")
    (tmp_path / "ccs" / "gateway" / "g.py").write_text("from ccs import outcome\n")
    (tmp_path / "ccs" / "xmpp" / "x.py").write_text("from http_fallback import p\n")
    (tmp_path / "http_fallback" / "p.py").write_text("from ccs.transport import t\n")
    graph = import_graph.edges(import_graph.modules(tmp_path))
    assert import_graph.layer_breaks(graph) == [
        ("ccs.transport.t", "ccs.gateway"), ("ccs.transport.t", "ccs.gateway.g"),
        ("ccs.xmpp.x", "http_fallback"), ("ccs.xmpp.x", "http_fallback.p")]


# Modules of ccs/ that still import http_fallback, each for a reason; the set only shrinks.
# console.demo: the scripted demo starts the FCM and APNs emulators with one CA.
STILL_IMPORT_HTTP_FALLBACK = {"ccs.console.demo"}


def test_ccs_finds_providers_through_the_registry() -> None:
    graph = import_graph.edges(import_graph.modules())
    importers = {m for m, targets in graph.items() if m.split(".")[0] == "ccs"
                 and any(t.split(".")[0] == "http_fallback" for t in targets)}
    assert importers - STILL_IMPORT_HTTP_FALLBACK == set()  # nothing new imports it
    assert STILL_IMPORT_HTTP_FALLBACK - importers == set()  # one stopped: take it off the list


def test_built_in_providers_are_declared_by_entry_points() -> None:
    from ccs import registry
    from ccs.gateway import providers

    names = {ep.name for ep in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert names >= set(registry.BUILTIN_NAMES) - {"ccs"}
    for name in sorted(set(registry.BUILTIN_NAMES) - {"ccs"}):
        declared = registry.spec(name)
        assert declared is not None and declared.name == name
        assert declared.factory.__module__.startswith("http_fallback.")
        assert providers.adapter_for(name) is declared.adapt


def test_built_in_emulators_come_from_their_declarations() -> None:
    from ccs.console.emulate import emulate

    ctx = click.Context(emulate)
    assert emulate.list_commands(ctx)[:6] == ["apns", "c2dm", "ccs", "fcm", "legacy", "mpns"]
    for name in ("apns", "c2dm", "fcm", "legacy", "mpns"):
        command = emulate.get_command(ctx, name)
        assert command is not None and command.callback.__module__.startswith("http_fallback.")


# Tests that look at the whole project rather than one package stay at the top of tests/.
CROSS_CUTTING = {"test_careless", "test_docs", "test_hostile_messages", "test_hostile_parsers",
                 "test_import_graph", "test_poison", "test_readme", "test_secrets"}


def test_tests_mirror_the_package() -> None:
    tests = ROOT / "tests"
    assert {p.stem for p in tests.glob("test_*.py")} == CROSS_CUTTING
    for path in sorted(tests.rglob("test_*.py")):
        parts = path.relative_to(tests).parts[:-1]
        if not parts:
            continue
        assert (tests.joinpath(*parts) / "__init__.py").exists(), path
        if parts[0] == "http_fallback":
            package = ROOT.joinpath(*parts)
        elif parts[0] == "seam":
            package = ROOT / "ccs"
        else:
            package = ROOT / "ccs" / Path(*parts)
        assert package.is_dir(), f"{path.relative_to(ROOT)} has no package {package.name}/"
