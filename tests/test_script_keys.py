"""Every key the Lua scripts build for themselves is one that broker/store/keys.py declares.

Scripts get most keys in KEYS, built by broker/store/keys.py. Some they build inside Lua instead,
from the project prefix (``pkey(prefix, "inbox:" .. lower)``) or from a key they were given
(``pending_key .. ":flag"``). Each such expression is read as a template (its string literals,
with a wildcard for every other operand) and must match a key that a ``Keys`` method produces,
so a Lua key that keys.py does not know fails here instead of landing silently in Redis.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from lua_source import KEYWORDS, Token, tokenize

from broker.store.keys import Keys
from broker.store.scripts import SCRIPT_DIR

HOLE = "\x00"  # what a Keys method is given for every argument but the slug
SLUG = "slug"

# pkey calls whose suffix is entirely computed, so nothing can be checked: (file, suffix).
OPAQUE_SUFFIXES = {
    # the caller names each stream entry's key: "inbox:<lower>" / "outbox:<lower>" (broker/store/commands/lifecycle.py)
    ("purge_messages.lua", "ARGV [ i ]"),
    ("common.lua", "prefix .. suffix"),  # pkey itself
}


def declared_keys() -> tuple[set[str], set[str]]:
    """Every key a Keys method builds, with HOLE for its arguments: the suffixes after the
    project prefix of the per-project ones, and the whole of the others."""
    keys = Keys(prefix="p")
    prefix = keys.project_prefix(SLUG)
    suffixes, whole = set(), set()
    for name, member in inspect.getmembers(Keys):
        if name.startswith("_") or name == "project_prefix":
            continue
        if isinstance(member, property):
            key = getattr(keys, name)
        elif inspect.isfunction(member):
            params = list(inspect.signature(member).parameters)[1:]
            key = member(keys, *[SLUG if p == "slug" else HOLE for p in params])
        else:
            continue
        whole.add(key)
        if key.startswith(prefix):
            suffixes.add(key.removeprefix(prefix))
    return suffixes, whole


def lua_files() -> list[Path]:
    return sorted(SCRIPT_DIR.glob("*.lua")) + sorted((SCRIPT_DIR / "lib").glob("*.lua"))


def split_top(tokens: list[Token], sep: str) -> list[list[Token]]:
    """Tokens split at ``sep`` outside brackets."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == "op" and tok.text in "([{":
            depth += 1
        elif tok.kind == "op" and tok.text in ")]}":
            depth -= 1
        if depth == 0 and tok.kind == "op" and tok.text == sep:
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


def call_args(tokens: list[Token], open_at: int) -> list[list[Token]]:
    """The arguments of the call whose "(" is tokens[open_at]."""
    depth = 0
    for end in range(open_at, len(tokens)):
        if tokens[end].text in ("(", "[", "{") and tokens[end].kind == "op":
            depth += 1
        elif tokens[end].text in (")", "]", "}") and tokens[end].kind == "op":
            depth -= 1
            if depth == 0:
                return split_top(tokens[open_at + 1 : end], ",")
    raise AssertionError(f"unbalanced call at line {tokens[open_at].line}")


def template(expr: list[Token]) -> list[str | None]:
    """A concatenation as its pieces: each string literal, None for any other operand."""
    pieces: list[str | None] = []
    for operand in split_top(expr, ".."):
        piece = operand[0].text if len(operand) == 1 and operand[0].kind == "string" else None
        if piece is None and pieces and pieces[-1] is None:
            continue
        pieces.append(piece)
    return pieces


def text_of(expr: list[Token]) -> str:
    return " ".join(repr(t.text) if t.kind == "string" else t.text for t in expr)


def closing(tokens: list[Token], at: int) -> int:
    """The index after the bracket group that opens at tokens[at]."""
    depth = 0
    for k in range(at, len(tokens)):
        if tokens[k].kind == "op" and tokens[k].text in "([{":
            depth += 1
        elif tokens[k].kind == "op" and tokens[k].text in ")]}":
            depth -= 1
            if depth == 0:
                return k + 1
    raise AssertionError(f"unbalanced bracket at line {tokens[at].line}")


def operand_end(tokens: list[Token], at: int) -> int:
    """The index after the operand of ``..`` that starts at tokens[at] (a literal, a bracketed
    expression, or a variable with its fields, indexes and calls)."""
    while tokens[at].text in ("#", "-") and tokens[at].kind == "op":
        at += 1
    if tokens[at].kind in ("string", "number"):
        return at + 1
    at = closing(tokens, at) if tokens[at].text == "(" else at + 1
    while at < len(tokens):
        if tokens[at].text in (".", ":") and tokens[at].kind == "op":
            at += 2
        elif tokens[at].text in ("[", "(", "{") and tokens[at].kind == "op":
            at = closing(tokens, at)
        elif tokens[at].kind == "string":  # f "text" call
            at += 1
        else:
            break
    return at


def is_key_name(expr: list[Token]) -> bool:
    """A variable that holds a key: ``KEYS[n]``, ``*_key``, or a project prefix."""
    if any(t.text == "(" for t in expr):
        return False  # a call's result
    names = [t.text for t in expr if t.kind == "name"]
    return bool(names) and (names[0] == "KEYS" or names[-1].endswith("_key") or names[-1] == "prefix")


def built_keys(path: Path) -> list[tuple[int, str, list[str | None], bool]]:
    """The keys a Lua file builds: (line, expression, template, relative to the project prefix).
    Found in ``pkey(prefix, suffix)`` calls and in concatenations that start with a key or a
    prefix (``KEYS[n] .. ":x"``, ``pending_key .. ":flag"``, ``prefix .. "x"``)."""
    tokens = tokenize(path.read_text())
    found = []
    for k, tok in enumerate(tokens[:-1]):
        after_field = k > 0 and tokens[k - 1].text in (".", ":", "..", "function")
        if tok.kind != "name" or tok.text in KEYWORDS or after_field:
            continue
        if tok.text == "pkey" and tokens[k + 1].text == "(":
            suffix = call_args(tokens, k + 1)[1]
            found.append((tok.line, text_of(suffix), template(suffix), True))
            continue
        first = operand_end(tokens, k)
        if first >= len(tokens) or tokens[first].text != ".." or not is_key_name(tokens[k:first]):
            continue
        end = first
        while end < len(tokens) and tokens[end].text == "..":
            end = operand_end(tokens, end + 1)
        pieces = template(tokens[first + 1 : end])
        relative = tokens[first - 1].text == "prefix"
        found.append((tok.line, text_of(tokens[k:end]), pieces if relative else [None, *pieces], relative))
    return found


def matches(pieces: list[str | None], declared: set[str]) -> bool:
    pattern = "".join(".+" if p is None else re.escape(p) for p in pieces)
    return any(re.fullmatch(pattern, key, re.DOTALL) for key in declared)


def undeclared(path: Path) -> list[str]:
    suffixes, whole = declared_keys()
    problems = []
    for line, expr, pieces, relative in built_keys(path):
        if pieces == [None]:
            if (path.name, expr) not in OPAQUE_SUFFIXES:
                problems.append(f"{path.name}:{line}: key suffix {expr} is computed: nothing to check it by")
        elif not matches(pieces, suffixes if relative else whole | suffixes):
            problems.append(f"{path.name}:{line}: {expr} builds a key that broker/store/keys.py does not declare")
    return problems


def test_the_keys_py_templates_cover_the_layout() -> None:
    suffixes, _ = declared_keys()
    assert {"msg:\x00", "inbox:\x00", "held:\x00:\x00#\x00", "pending:flag", "res:agent:\x00"} <= suffixes


def test_key_templates_are_found() -> None:
    """The extraction sees the known kinds of built keys (so the check below is not vacuous)."""
    found = {(path.name, expr) for path in lua_files() for _, expr, _, _ in built_keys(path)}
    assert ("common.lua", "pending_key .. ':flag'") in found
    assert ("send_message.lua", "'held:' .. lower .. ':' .. s . slug .. '#' .. s . lower") in found
    assert ("reservations.lua", "'res:index'") in found
    assert len(found) > 60


@pytest.mark.parametrize("path", lua_files(), ids=lambda p: p.name)
def test_every_key_built_in_lua_is_declared(path: Path) -> None:
    assert undeclared(path) == []


def test_an_undeclared_key_fails(tmp_path: Path) -> None:
    """Proof the check bites: a made-up key, built each way Lua builds keys, is reported."""
    script = tmp_path / "ghost.lua"
    script.write_text(
        "local prefix, lower = ARGV[1], ARGV[2]\n"
        'redis.call("DEL", pkey(prefix, "ghost:" .. lower))\n'
        'redis.call("DEL", pkey(prefix, "msg:" .. lower .. ":ghost"))\n'
        'redis.call("DEL", KEYS[1] .. ":ghost")\n'
        "local holder_key = pkey(prefix, lower)\n"
    )
    problems = undeclared(script)
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4", "5"], problems
