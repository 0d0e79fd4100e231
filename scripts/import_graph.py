#!/usr/bin/env python3
"""The import graph of ccs/ and http_fallback/, read with `ast` (nothing is imported).

Every import counts: at module level, inside functions, and under `if TYPE_CHECKING:`; relative
imports are resolved. `from pkg import name` counts as an import of `pkg.name` when that is a
module, else of `pkg`. Importing `a.b.c` runs `a/__init__` and `a/b/__init__` too, so those count
as well. Prints the package-level graph, then every cycle among modules (one per strongly
connected component: a shortest circle through it, plus the component's size).

Then the layers: each module belongs to one (LAYERS, lowest first) and may import only its own
layer and the ones below; the CCS provider (ccs.xmpp) and the HTTP providers (http_fallback) are
siblings that never import each other. Every import that breaks this is listed.

    python scripts/import_graph.py            # exit status 1 on a cycle or a layer broken
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ccs", "http_fallback")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages."""
    found: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return name
    base = current.split(".")
    if not is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _with_parents(target: str, mods: dict[str, Path]) -> list[str]:
    parts = target.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in mods]


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (itself and its own parents excluded)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    targets.update(_with_parents(alias.name, mods))
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, is_package)
                targets.update(_with_parents(base, mods))
                for alias in node.names:
                    if f"{base}.{alias.name}" in mods:
                        targets.add(f"{base}.{alias.name}")
        own_parents = set(_with_parents(name, mods))
        graph[name] = targets - own_parents
    return graph


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif nxt not in index:
                index[nxt] = low[nxt] = counter
                counter += 1
                stack.append(nxt)
                on_stack.add(nxt)
                work.append((nxt, iter(sorted(graph[nxt]))))
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
    return sorted(out)


def shortest_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest circle inside one component, as [a, b, ..., a]."""
    members = set(comp)
    best: list[str] | None = None
    for start in comp:
        prev: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])  # type: ignore[arg-type]
                    path.reverse()
                    if best is None or len(path) < len(best) - 1:
                        best = path + [start]
                    queue.clear()
                    break
                if nxt not in prev:
                    prev[nxt] = node
                    queue.append(nxt)
    assert best is not None
    return best


def cycles(root: Path = ROOT) -> list[list[str]]:
    """One shortest circle per strongly connected component of the module graph."""
    graph = edges(modules(root))
    return [shortest_cycle(graph, comp) for comp in components(graph)]


def package_graph(graph: dict[str, set[str]], depth: int = 2) -> dict[str, set[str]]:
    """Packages `depth` names deep (2: ccs.xmpp.emulator, http_fallback.fcm, ...) -> the packages
    they import."""
    def pkg(mod: str) -> str:
        return ".".join(mod.split(".")[:depth])

    out: dict[str, set[str]] = defaultdict(set)
    for mod, targets in graph.items():
        out[pkg(mod)].update(pkg(t) for t in targets if pkg(t) != pkg(mod))
    return out


# (layer, level, module prefixes); a module takes the layer of its longest matching prefix.
LAYERS: list[tuple[str, int, tuple[str, ...]]] = [
    ("seam", 0, ("ccs", "ccs.testing")),
    ("transport", 1, ("ccs.transport",)),
    ("ccs provider", 2, ("ccs.xmpp",)),
    ("http providers", 2, ("http_fallback",)),
    ("gateway", 3, ("ccs.gateway",)),
    ("console", 4, ("ccs.console", "ccs.__main__")),
]


def layer_of(module: str) -> tuple[str, int]:
    best: tuple[int, str, int] = (-1, "", 0)
    for name, level, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), name, level)
    return best[1], best[2]


def layer_breaks(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that reach up a layer or across to a sibling."""
    out = []
    for mod, targets in sorted(graph.items()):
        name, level = layer_of(mod)
        for target in sorted(targets):
            t_name, t_level = layer_of(target)
            if t_level > level or (t_level == level and t_name != name):
                out.append((mod, target))
    return out


def main() -> int:
    mods = modules()
    graph = edges(mods)
    print(f"# top level ({len(mods)} modules)")
    for name, targets in sorted(package_graph(graph, 1).items()):
        print(f"{name} -> {', '.join(sorted(targets)) or '-'}")
    print("\n# packages")
    for name, targets in sorted(package_graph(graph).items()):
        print(f"{name} -> {', '.join(sorted(targets)) or '-'}")
    comps = components(graph)
    print(f"\n# cycles: {len(comps)}")
    for comp in comps:
        circle = shortest_cycle(graph, comp)
        print(f"{' -> '.join(circle)}  ({len(comp)} modules: {', '.join(comp)})")
    print("\n# layers, lowest first: " + "; ".join(
        f"{level} {name} ({', '.join(prefixes)})" for name, level, prefixes in LAYERS))
    breaks = layer_breaks(graph)
    print(f"# imports against the layers: {len(breaks)}")
    for importer, imported in breaks:
        print(f"{importer} -> {imported}")
    return 1 if comps or breaks else 0


if __name__ == "__main__":
    sys.exit(main())
