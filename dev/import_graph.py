"""Print the shape of the import graph: modules, levels, cycles and imports against the layers.

    python dev/import_graph.py            # this checkout
    python dev/import_graph.py --verbose  # also list every cycle and every import against the layers

Every import counts, also those inside functions and under TYPE_CHECKING (grimp reads them all).
Levels: the longest chain of imports (a cycle counts as one module). The layers are the ones
docs/architecture.md states and pyproject.toml's import-linter contracts enforce.
"""

from __future__ import annotations

import argparse
import sys
from functools import cache
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = ("identity", "mail", "reservations", "lifecycle", "history", "macros", "realtime")
# Module of the flat layout (before issue 13) -> the package it moved to, to judge it by the same rules.
FLAT = {
    "server": "mcp",
    "http": "mcp",
    "profiles": "mcp",
    "tool_catalog": "mcp",
    "tool_usage": "mcp",
    "tooling": "mcp",
    "calllog": "mcp",
    "metrics": "mcp",
    "ratelimit": "mcp",
    "tools": "mcp",
    "events": "realtime",
    "identity": "identity",
    "slugs": "identity",
    "names": "identity",
    "windows": "identity",
    "auth": "identity",
    "operator": "identity",
    "project_views": "identity",
    "mail": "mail",
    "inbox": "mail",
    "routing": "mail",
    "contacts": "mail",
    "views": "mail",
    "idempotency": "mail",
    "reservations": "reservations",
    "globs": "reservations",
    "staleness": "reservations",
    "guard": "reservations",
    "reservation_record": "reservations",
    "lifecycle": "lifecycle",
    "erase": "lifecycle",
    "retention": "lifecycle",
    "history": "history",
    "summaries": "history",
    "macros": "macros",
    "handshake": "macros",
    "doorbell": "realtime",
    "arrivals": "realtime",
    "push": "realtime",
    "watch": "realtime",
    "store": "store",
    "connection": "store",
    "embedded": "store",
    "ids": "store",
    "keys": "store",
    "scripts": "store",
    "luajson": "store",
    "persist": "persistence",
    "persist_entries": "persistence",
    "persist_guards": "persistence",
    "persist_queue": "persistence",
    "persist_state": "persistence",
    "archive": "persistence",
    "index": "persistence",
    "rehydrate": "persistence",
    "dead_letters": "persistence",
    "ratelog": "persistence",
    "private": "persistence",
    "commit_info": "persistence",
}
ENTRY = ("broker.cli", "broker.server", "workers")


def room(module: str) -> str:
    """The layer a module belongs to: mcp, a domain package, store, persistence, entry or basic."""
    parts = module.split(".")
    if parts[0] == "workers" or module in ENTRY:
        return "entry"
    if len(parts) == 1:
        return "basic"
    head = parts[1]
    if head in ("mcp", "store", "persistence"):
        return head
    if head in DOMAIN and (ROOT / "broker" / head).is_dir():
        return "domain"
    if head in FLAT:  # a module of the flat layout
        return "domain" if FLAT[head] in DOMAIN else FLAT[head]
    return "basic"


def against_layers(importer: str, imported: str) -> str | None:
    """Why this import runs against the layers, or None when it runs their way."""
    a, b = room(importer), room(imported)
    if b == "mcp" and a not in ("mcp", "entry"):
        return "imports the MCP facade"
    if a == "store" and b not in ("store", "basic"):
        return "store imports a higher layer"
    if a == "persistence" and b in ("domain", "mcp"):
        return "persistence imports the domain"
    if a == "basic" and b not in ("basic",):
        return "a shared basic imports a layer"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true")
    options = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph("broker", "workers", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) - {m} for m in modules}
    cycles = [c for c in strongly_connected(modules, edges) if len(c) > 1]
    component = {m: i for i, c in enumerate(strongly_connected(modules, edges)) for m in c}

    @cache
    def level(module: str) -> int:
        below = [level(m) for m in edges[module] if m in component and component[m] != component[module]]
        return 1 + max(below, default=0)

    wrong = sorted((a, b, why) for a in modules for b in edges[a] if (why := against_layers(a, b)))
    top = [m for m in modules if m.count(".") == 1 and (ROOT / "broker" / f"{m.split('.')[1]}.py").exists()]
    print(f"modules: {len(modules)} ({len(top)} directly in broker/)")
    print(f"levels: {max(level(m) for m in modules)}")
    if options.verbose:
        chain = [max(modules, key=level)]
        while below := [m for m in edges[chain[-1]] if m in component and level(m) == level(chain[-1]) - 1]:
            chain.append(sorted(below)[0])
        print("  longest chain: " + " -> ".join(chain))
    print(f"cycles: {len(cycles)}" + "".join(f"\n  {' <-> '.join(sorted(c))}" for c in cycles if options.verbose))
    print(f"imports against the layers: {len(wrong)}")
    if options.verbose:
        for a, b, why in wrong:
            print(f"  {a} -> {b}: {why}")
    return 0


def strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    out.append(group)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
