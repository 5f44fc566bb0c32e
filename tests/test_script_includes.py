"""Lua includes: each script is sent with exactly the helper files it uses.

A helper a script calls but does not include is a nil global in Redis ("attempt to call a nil
value") on the first run of that code path, so these checks are static and cover every path:
every function a script's source calls is defined before the call in that source, or is a
Redis/Lua builtin.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lua_source import definitions, is_call, is_ref, tokenize

from broker.store import scripts
from broker.store.scripts import SCRIPT_DIR, ScriptIncludeError, includes, resolve_includes, script_names, script_source

# Globals of the Lua 5.1 that Redis runs; redis, cjson, string, table, math, bit, struct,
# cmsgpack are tables, whose functions are called as fields (never as a bare name).
BUILTINS = frozenset(
    [
        "assert",
        "error",
        "getmetatable",
        "ipairs",
        "next",
        "pairs",
        "pcall",
        "rawequal",
        "rawget",
        "rawset",
        "select",
        "setmetatable",
        "tonumber",
        "tostring",
        "type",
        "unpack",
        "xpcall",
    ]
)


def lib_files() -> list[str]:
    return sorted(f"lib/{p.name}" for p in (SCRIPT_DIR / "lib").glob("*.lua"))


def top_level_names(relative: str) -> set[str]:
    """The functions and constants a helper file defines at its top level."""
    names = set()
    for line in (SCRIPT_DIR / relative).read_text().splitlines():
        words = line.split()
        if line.startswith("local function "):
            names.add(words[2].split("(")[0])
        elif line.startswith("local ") and "=" in words:
            names.update(w.strip(",") for w in words[1 : words.index("=")])
    return names


def undefined_calls(source: str) -> list[str]:
    """Names called (``name(``) that are neither builtins nor defined earlier in ``source``, and
    helper names (functions and constants of lib/) used before any definition."""
    tokens = tokenize(source)
    defined = definitions(tokens)
    helpers = set().union(*(top_level_names(lib) for lib in lib_files()))
    problems = []
    for k, tok in enumerate(tokens):
        if not is_ref(tokens, k) or tok.text in BUILTINS:
            continue
        used = is_call(tokens, k) or tok.text in helpers
        if used and defined.get(tok.text, len(tokens)) >= k:
            problems.append(f"line {tok.line}: {tok.text}")
    return problems


def test_script_names_are_the_operations_only() -> None:
    names = script_names()
    assert "send_message" in names and "reserve" in names
    helpers = {Path(lib).stem for lib in lib_files()}
    assert not helpers & set(names)
    assert all("/" not in name for name in names)


@pytest.mark.parametrize("name", script_names())
def test_every_called_function_is_defined(name: str) -> None:
    assert undefined_calls(script_source(name)) == []


@pytest.mark.parametrize("relative", [f"{n}.lua" for n in script_names()] + lib_files())
def test_a_file_includes_exactly_the_helpers_it_uses(relative: str) -> None:
    """Direct includes only: a helper used through another helper is that helper's include."""
    tokens = tokenize((SCRIPT_DIR / relative).read_text())
    used_names = {t.text for k, t in enumerate(tokens) if is_ref(tokens, k)}
    own = top_level_names(relative) if relative.startswith("lib/") else set()
    used = {lib for lib in lib_files() if lib != relative and (top_level_names(lib) - own) & used_names}
    assert set(includes(relative)) == used


def test_the_check_sees_a_missing_include() -> None:
    body = (SCRIPT_DIR / "get_agent.lua").read_text()
    assert [p.split(": ")[1] for p in undefined_calls(body)] == ["resolve_agent"]
    assert undefined_calls("local t = 1\nreturn RES_SEP .. t") == ["line 2: RES_SEP"]
    assert undefined_calls("local function f() return g() end\nlocal function g() return 1 end") == ["line 1: g"]
    assert undefined_calls("local n = tonumber(ARGV[1])\nreturn redis.call('GET', KEYS[1]) .. n") == []


def test_the_largest_script_is_sent_without_unused_helpers() -> None:
    assert "patterns_overlap" not in script_source("send_message")
    assert "rate_open" not in script_source("get_agent")
    for name in script_names():
        assert len(script_source(name).splitlines()) < 800


# -- the resolver -------------------------------------------------------------------------------
@pytest.fixture
def lua_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "lib").mkdir()
    monkeypatch.setattr(scripts, "SCRIPT_DIR", tmp_path)
    return tmp_path


def write(root: Path, relative: str, *lines: str) -> None:
    (root / relative).write_text("\n".join(lines) + "\n")


def test_includes_resolve_once_in_dependency_order(lua_dir: Path) -> None:
    write(lua_dir, "lib/a.lua", "-- a", "local function a() return 1 end")
    write(lua_dir, "lib/b.lua", "-- b: uses a", "-- @include lib/a.lua", "local function b() return a() end")
    write(lua_dir, "lib/c.lua", "-- @include lib/a.lua", "-- @include lib/b.lua", "local function c() end")
    write(lua_dir, "op.lua", "-- op", "-- KEYS none", "-- @include lib/c.lua", "-- @include lib/b.lua", "return c()")
    assert resolve_includes("op.lua") == ["lib/a.lua", "lib/b.lua", "lib/c.lua", "op.lua"]
    source = scripts.lua_source("op.lua")
    assert source.index("local function a") < source.index("local function b") < source.index("return c()")
    assert source.count("local function a") == 1


def test_a_missing_include_is_named(lua_dir: Path) -> None:
    write(lua_dir, "op.lua", "-- @include lib/nope.lua", "return 1")
    with pytest.raises(ScriptIncludeError, match=r"lib/nope\.lua"):
        resolve_includes("op.lua")


def test_an_include_cycle_is_named(lua_dir: Path) -> None:
    write(lua_dir, "lib/a.lua", "-- @include lib/b.lua")
    write(lua_dir, "lib/b.lua", "-- @include lib/a.lua")
    write(lua_dir, "op.lua", "-- @include lib/a.lua", "return 1")
    with pytest.raises(ScriptIncludeError, match=r"cycle: lib/a\.lua -> lib/b\.lua -> lib/a\.lua"):
        resolve_includes("op.lua")


def test_an_include_after_code_is_refused(lua_dir: Path) -> None:
    write(lua_dir, "lib/a.lua", "local x = 1")
    write(lua_dir, "op.lua", "-- op", "local y = 2", "-- @include lib/a.lua", "return y")
    with pytest.raises(ScriptIncludeError, match=r"op\.lua:3"):
        resolve_includes("op.lua")
