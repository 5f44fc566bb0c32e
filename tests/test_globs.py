"""Reservation pattern semantics: the Python matcher, its Lua twin, and brute-force enumeration agree.

The oracle here is independent of both: it enumerates every path over a small alphabet (and the
patterns' own texts, which they match literally) and matches each with a naive recursive
matcher built on ``fnmatch``.
"""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from helpers import make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.reservations import globs
from broker.store.commands import reservations as reservation_store
from broker.store.store import Store

# Patterns use the letters a, b and c only inside classes; "d" stands for every other letter,
# which a pair of negated classes may need.
ALPHABET = "abd"
SEGMENT_TEXTS = ["".join(p) for n in (1, 2) for p in itertools.product(ALPHABET, repeat=n)]
PATHS = [tuple(parts) for depth in (1, 2, 3, 4) for parts in itertools.product(SEGMENT_TEXTS, repeat=depth)]

segment_tokens = st.sampled_from(["a", "b", "*", "?", "[ab]", "[!a]", "[a-b]", "[^bc]"])
segment = st.lists(segment_tokens, min_size=1, max_size=2).map("".join)
pattern_parts = st.lists(st.one_of(segment, st.just("**")), min_size=1, max_size=3)
patterns = pattern_parts.map(lambda parts: globs.normalize("/".join(parts)))


def naive_match(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(naive_match(rest, path[k:]) for k in range(len(path) + 1))
    # fnmatch spells class negation '!' only; '^' is ours too
    head = head.replace("[^", "[!")
    return bool(path) and fnmatchcase(path[0], head) and naive_match(rest, path[1:])


def oracle_matches(pattern: str, path: tuple[str, ...]) -> bool:
    return naive_match(tuple(pattern.split("/")), path) or "/".join(path) == pattern


def oracle_overlaps(a: str, b: str) -> bool:
    candidates = [*PATHS, tuple(a.split("/")), tuple(b.split("/"))]
    return any(oracle_matches(a, p) and oracle_matches(b, p) for p in candidates)


@settings(max_examples=300, deadline=None)
@given(patterns, patterns)
def test_overlap_equals_brute_force(a: str, b: str) -> None:
    assert globs.overlaps(a, b) == oracle_overlaps(a, b)
    assert globs.overlaps(b, a) == globs.overlaps(a, b)


@settings(max_examples=200, deadline=None)
@given(patterns, st.sampled_from(PATHS[:200]))
def test_matches_equals_brute_force(pattern: str, path: tuple[str, ...]) -> None:
    assert globs.matches(pattern, "/".join(path)) == oracle_matches(pattern, path)


@pytest.mark.parametrize(
    ("held", "requested", "expected"),
    [
        ("src/app.py", "src/**", True),  # the reference misses this pair
        ("src/a/*.py", "src/*/b.py", True),  # and this one
        ("src/a*.py", "src/*b.py", True),
        ("src/*.py", "src/**", True),
        ("src/**/*.py", "src/app.py", True),
        ("src/**", "src", True),  # '**' matches zero segments
        ("src/", "src/deep/file.md", True),  # a trailing slash is the whole directory
        ("src", "src/app.py", False),  # a bare name is that path only
        ("app.py", "lib/app.py", False),  # anchored at the project root
        ("*.py", "lib/app.py", False),
        ("**/*.py", "lib/app.py", True),
        ("**/*.py", "docs/readme.md", False),
        ("src/*.py", "lib/*.py", False),
        ("src/[ab].py", "src/c.py", False),
        ("src/[!a].py", "src/a.py", False),
        ("src/[!a].py", "src/[ab].py", True),  # 'b.py' matches both
        ("app/[id]/page.tsx", "app/[id]/page.tsx", True),
        ("app/[id]/page.tsx", "app/*/page.tsx", True),  # the literal directory '[id]'
        ("app/[id]/page.tsx", "app/x/page.tsx", False),
        ("src/caf?.py", "src/café.py", True),  # '?' is one character, not one byte
        ("tool://build", "tool://build", True),
        ("tool://build", "tool://test", False),
        ("tool://build", "**", False),  # virtual names never meet paths
    ],
)
def test_known_pairs(held: str, requested: str, expected: bool) -> None:
    a, b = globs.normalize(held), globs.normalize(requested)
    assert globs.overlaps(a, b) is expected
    assert globs.overlaps(b, a) is expected


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/src//app.py", "src/app.py"),
        ("./src/./app.py", "src/app.py"),
        ("src\\win\\path.py", "src/win/path.py"),
        ("src/", "src/**"),
        ("src/**/**/x", "src/**/x"),
        ("src/a***b", "src/a*b"),
        ("  lib/x  ", "lib/x"),
        ("tool://build", "tool://build"),
    ],
)
def test_normalize(raw: str, normal: str) -> None:
    assert globs.normalize(raw) == normal


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "names no path"),
        ("/", "names no path"),
        ("../etc/passwd", "'..'"),
        ("src/[ab", "without its ']'"),
        ("src/[z-a]", "reversed range"),
        ("src/[é]", "non-ASCII"),
        ("src/\x00", "control character"),
        ("x" * 513, "characters long"),
        ("src/" + "x" * 120 + "/*.py", "128 characters"),  # a glob is shorter than a plain path
        ("*" + "a" * 40, "characters in its wildcard segments"),
        ("src/*" + "a" * 20 + "/*" + "b" * 20, "characters in its wildcard segments"),
        ("/".join(["a"] * 33), "segments"),
        ("/".join(["**", "a"] * 5), "'**' segments"),
        ("*?" * 9, "wildcards"),
        ("tool://", "names no resource"),
    ],
)
def test_normalize_refuses(raw: str, fragment: str) -> None:
    with pytest.raises(globs.PatternError, match=r"^Path pattern") as caught:
        globs.normalize(raw)
    assert fragment in str(caught.value)


def test_literal_prefix() -> None:
    assert globs.literal_prefix("src/app/models/*.py") == "src/app/models"
    assert globs.literal_prefix("src/app.py") == "src/app.py"
    assert globs.literal_prefix("**/x") == ""
    assert globs.literal_prefix("tool://x") == "tool://x"


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.integration)])
async def lua_overlap(request: pytest.FixtureRequest, tmp_path: Path):
    url = "memory://globs" if request.param == "fakeredis" else request.getfixturevalue("redis_url")
    store = Store(make_settings(url, tmp_path), url, bindings=None)  # type: ignore[arg-type]

    async def overlap(pairs: list[tuple[str, str]], costs: bool = False) -> Any:
        found = await reservation_store.glob_overlap(store, pairs=pairs)
        if costs:
            return [f.overlaps for f in found], [f.steps for f in found], [f.bound for f in found]
        return [f.overlaps for f in found]

    yield overlap
    await store.close()


async def test_lua_twin_equals_python(lua_overlap) -> None:
    """Many random pairs in one script call per batch: the Lua matcher agrees with Python."""
    pairs = st.tuples(patterns, patterns)
    examples: list[tuple[str, str]] = []

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(pairs)
    def collect(pair: tuple[str, str]) -> None:
        examples.append(pair)

    collect()
    known = [(globs.normalize(a), globs.normalize(b)) for a, b, _ in KNOWN_PAIRS]
    examples += known + [(b, a) for a, b in known]
    expected = [globs.overlaps(a, b) for a, b in examples]
    assert await lua_overlap(examples) == expected


KNOWN_PAIRS = test_known_pairs.pytestmark[0].args[1]


# Patterns at the caps whose segments keep both matchers busy: a long run of literal characters
# after a '*' on each side, differing only at the very end (or not at all). A pattern with
# wildcards is at most 128 characters with 40 in its wildcard segments; a plain path 512.
LONG_SEGMENT = "*" + "a" * 18 + "*" + "a" * 18  # 38 characters: weight 39 with 'b' (or 'c')
LONG_PAIRS = [
    (LONG_SEGMENT + "b", LONG_SEGMENT + "c", False),
    (LONG_SEGMENT + "b", LONG_SEGMENT + "b", True),
    (LONG_SEGMENT + "b", "a" * 511 + "b", True),  # against the longest plain path
    ("**/" + "?" * 15 + "a" * 24 + "/**", "**/*" + "a" * 38 + "/**", True),  # weight 40 each
    ("x" * 80 + "/**/" + "?" * 15 + "a" * 24 + "/**", "x" * 80 + "/*" + "a" * 38 + "/y", True),  # 128 long
    ("x" * 80 + "/**/" + "?" * 15 + "a" * 24 + "/**", "x" * 80 + "/" + "a" * 429 + "/y", False),
]


@pytest.mark.parametrize(("a", "b", "expected"), LONG_PAIRS)
def test_long_patterns_within_the_caps(a: str, b: str, expected: bool) -> None:
    """Patterns at the caps are accepted, so matching them must not exhaust Python's stack."""
    a, b = globs.normalize(a), globs.normalize(b)
    assert globs.overlaps(a, b) is expected
    assert globs.matches(a, "a" * 255 + "b") is globs.overlaps(a, globs.normalize("a" * 255 + "b"))


async def test_lua_long_patterns_agree(lua_overlap) -> None:
    """The Lua twin gives the same answers on patterns at the caps."""
    pairs = [(globs.normalize(a), globs.normalize(b)) for a, b, _ in LONG_PAIRS]
    assert await lua_overlap(pairs) == [expected for _a, _b, expected in LONG_PAIRS]


async def test_work_estimate_bounds_the_matcher_and_twins_agree(lua_overlap) -> None:
    """reserve.lua prices a pair before matching it (pair_steps): the price is never below the
    cells the Lua matcher then fills, and the Python twin prices every pair alike. Patterns at
    the caps price within one call's budget, so no single pair can be refused."""
    from broker.reservations.service import STEP_BUDGET

    examples: list[tuple[str, str]] = []

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.tuples(patterns, patterns))
    def collect(pair: tuple[str, str]) -> None:
        examples.append(pair)

    collect()
    examples += [(globs.normalize(a), globs.normalize(b)) for a, b, _ in LONG_PAIRS]
    examples += [(b, a) for a, b in examples[-len(LONG_PAIRS) :]]
    examples += [(globs.normalize("src/café-*.py"), globs.normalize("src/cafés-été.py"))]  # characters, not bytes
    answers, steps, bounds = await lua_overlap(examples, costs=True)
    assert answers == [globs.overlaps(a, b) for a, b in examples]
    assert bounds == [globs.pair_steps(a, b) for a, b in examples]
    assert all(used <= bound for used, bound in zip(steps, bounds, strict=True)), [
        (pair, used, bound) for pair, used, bound in zip(examples, steps, bounds, strict=True) if used > bound
    ]
    assert max(steps) > 10_000  # the caps' pairs were costly ones
    assert max(bounds) + 32 <= STEP_BUDGET
