"""The layout docs/architecture.md describes holds in the code: layers, no cycles, one door to Redis.

A newcomer reads the packages as layers (entry points, MCP facade, domain, persistence, store,
shared basics); these tests fail the build the day an import runs against them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
BROKER = ROOT / "broker"
# Raw Redis access: the client, a script by name, or a pipeline. Only broker/store/ may do it.
RAW_REDIS = re.compile(r"\.redis\b|\.client\(\)|\bstore\.run\(|\.pipeline\(|\bscript_source\(")


def test_the_import_contracts_in_pyproject_hold() -> None:
    """Layers and "only broker.store imports redis", as pyproject.toml's import-linter contracts say."""
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(linter), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_no_module_imports_itself_back_through_others() -> None:
    """No import cycle anywhere, also through imports inside functions (grimp reads them all)."""
    graph = grimp.build_graph("broker", "workers", cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            back = graph.find_shortest_chain(imported, importer)
            if imported != importer and back:
                cycles.append(" -> ".join((importer, *back)))
    assert cycles == []


def test_broker_top_level_holds_only_entry_points_and_shared_basics() -> None:
    modules = sorted(p.name for p in BROKER.glob("*.py"))
    assert modules == ["__init__.py", "cli.py", "errors.py", "guard.py", "server.py"]


def test_only_the_store_touches_the_redis_client() -> None:
    """Domain, facade and persistence code call the store's typed commands, never the client."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted([*BROKER.rglob("*.py"), *(ROOT / "workers").rglob("*.py")])
        if not path.is_relative_to(BROKER / "store")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if RAW_REDIS.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []
