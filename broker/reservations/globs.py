"""Reservation patterns: normalisation, caps, matching and exact overlap.

This is the Python twin of ``broker/scripts/lib/globs.lua``; property tests hold the two equal,
and both equal to brute-force enumeration. The semantics (also in docs/reservations.md):

* A pattern is a path relative to the project root, in ``/``-separated segments. ``\\`` is
  read as ``/``; leading ``/`` and ``./``, empty and ``.`` segments are dropped; ``..`` is refused.
* Inside a segment: ``*`` matches any run of characters (``***`` is ``*``), ``?`` one character,
  ``[abc]``, ``[a-z]``, ``[!a-z]`` / ``[^a-z]`` one character of (or not of) a class (ASCII
  members only). A segment that is exactly ``**`` matches zero or more whole segments.
* A path matches a pattern when the whole path matches it: ``src`` is the path ``src`` only. To
  reserve a directory with everything in it write ``src/`` (read as ``src/**``) or ``src/**``.
* A pattern also matches its own text taken literally, so ``app/[id]/page.tsx`` reserves that
  real file (Next.js-style names) as well as ``app/i/page.tsx``.
* Patterns are anchored at the project root: ``*.py`` is top-level only; ``**/*.py`` is all.
* ``tool://``, ``resource://`` and ``service://`` names are not paths: they match only an equal
  name.

Two patterns overlap iff some path matches both. ``overlaps()`` decides that exactly, with a
memoised walk over both patterns at once (never by matching one pattern's text against the
other, which misses ``src/**`` against ``src/app.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache

VIRTUAL_PREFIXES = ("tool://", "resource://", "service://")

# Caps that bound the work of one overlap test (each refused with a clear error).
MAX_PATTERN_CHARS = 512
MAX_SEGMENTS = 32
MAX_WILDCARDS = 16  # '*', '?' and '[...]' tokens in one pattern
MAX_GLOBSTARS = 4  # '**' segments in one pattern
# Caps that bound the cost of comparing two patterns (see pair_steps): a pattern with wildcards
# is at most MAX_GLOB_CHARS long, and its wildcard segments' characters (plus one per such
# segment) are at most MAX_GLOB_WEIGHT. Any two patterns within the caps then compare in at
# most about 21,000 matching steps (~3 ms of Redis), under reserve's per-call step budget.
MAX_GLOB_CHARS = 128
MAX_GLOB_WEIGHT = 40

GLOBSTAR = "**"
STAR = ("*",)

# A character token is (negated, ranges): one character whose code point is in one of the
# inclusive ranges (or, negated, in none of them). '?' is (True, ()).
CharToken = tuple[bool, tuple[tuple[int, int], ...]]
Token = CharToken | tuple[str]
Segment = tuple[Token, ...] | str  # GLOBSTAR or a token tuple


class PatternError(ValueError):
    """A pattern that cannot be used; the text says what is wrong and what to write instead.
    (A plain ValueError keeps this module light: the pre-commit hook imports it.)"""


def invalid(pattern: str, problem: str, remedy: str) -> PatternError:
    return PatternError(f"Path pattern '{pattern[:80]}' {problem}. {remedy}")


def is_virtual(pattern: str) -> bool:
    return pattern.startswith(VIRTUAL_PREFIXES)


def has_wildcards(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def normalize(raw: str) -> str:
    """The canonical text of a pattern, or PatternError naming what is wrong."""
    if not isinstance(raw, str):
        raise PatternError(f"Path patterns must be strings, got {type(raw).__name__}.")
    return normalize_text(raw)


@lru_cache(maxsize=8192)  # agents reserve the same few patterns again and again
def normalize_text(raw: str) -> str:
    text = raw.strip()
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise invalid(raw, "contains a control character", "Use printable characters only.")
    if len(text) > MAX_PATTERN_CHARS:
        raise invalid(raw, f"is {len(text)} characters long", f"Keep patterns to {MAX_PATTERN_CHARS} characters.")
    if is_virtual(text):
        if len(text) == text.index("://") + 3:
            raise invalid(raw, "names no resource", "Write e.g. 'tool://build' or 'service://db'.")
        return text
    segments: list[str] = []
    text = text.replace("\\", "/")
    if text.endswith("/") and text.strip("/"):
        text += GLOBSTAR  # 'src/' is the directory and everything in it
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise invalid(raw, "climbs out of the project with '..'", "Write the path relative to the project root.")
        if part != GLOBSTAR and "**" in part:
            while "**" in part:
                part = part.replace("**", "*")
        if part == GLOBSTAR and segments and segments[-1] == GLOBSTAR:
            continue  # '**/**' is '**'
        segments.append(part)
    if not segments:
        raise invalid(raw, "names no path", "Use '**' to reserve the whole project, or name a file or directory.")
    if len(segments) > MAX_SEGMENTS:
        raise invalid(raw, f"has {len(segments)} segments", f"Use at most {MAX_SEGMENTS}.")
    pattern = "/".join(segments)
    if not has_wildcards(pattern):
        return pattern
    if len(pattern) > MAX_GLOB_CHARS:  # a plain path compares as text, a glob by the table
        raise invalid(
            raw,
            f"is {len(pattern)} characters long with wildcards",
            f"Keep a pattern with '*', '?' or '[...]' to {MAX_GLOB_CHARS} characters (a plain path may have "
            f"{MAX_PATTERN_CHARS}), e.g. reserve its directory with 'dir/'.",
        )
    globstars = segments.count(GLOBSTAR)
    if globstars > MAX_GLOBSTARS:
        raise invalid(raw, f"has {globstars} '**' segments", f"Use at most {MAX_GLOBSTARS}.")
    wildcards = sum(1 for seg in segments if seg != GLOBSTAR for tok in tokenize(seg, raw) if is_wildcard(tok))
    if wildcards > MAX_WILDCARDS:
        raise invalid(
            raw, f"has {wildcards} wildcards", f"Use at most {MAX_WILDCARDS} '*', '?' and '[...]' in one pattern."
        )
    weight = glob_weight(pattern)
    if weight > MAX_GLOB_WEIGHT:
        raise invalid(
            raw,
            f"has {weight} characters in its wildcard segments",
            f"Keep the segments holding '*', '?' or '[...]' to {MAX_GLOB_WEIGHT} characters in all (one more is "
            "counted per such segment), e.g. '*.py' instead of a long '*...*' segment.",
        )
    return pattern


def is_wildcard(token: Token) -> bool:
    """STAR, '?' or a class (a class of one character counts too: it costs the same)."""
    return token == STAR or token[0] is True or len(token[1]) != 1 or token[1][0][0] != token[1][0][1]  # type: ignore[index]


def tokenize(segment: str, raw: str) -> tuple[Token, ...]:
    """A segment as tokens: STAR, or a character token."""
    tokens: list[Token] = []
    i, n = 0, len(segment)
    while i < n:
        ch = segment[i]
        if ch == "*":
            if not tokens or tokens[-1] != STAR:
                tokens.append(STAR)
            i += 1
        elif ch == "?":
            tokens.append((True, ()))
            i += 1
        elif ch == "[":
            token, i = parse_class(segment, i, raw)
            tokens.append(token)
        else:
            tokens.append((False, ((ord(ch), ord(ch)),)))
            i += 1
    return tuple(tokens)


def parse_class(segment: str, start: int, raw: str) -> tuple[CharToken, int]:
    i = start + 1
    negated = i < len(segment) and segment[i] in "!^"
    if negated:
        i += 1
    ranges: list[tuple[int, int]] = []
    first = True
    while True:
        if i >= len(segment):
            raise invalid(
                raw, "has a '[' without its ']'", "Close the class, e.g. '[abc]', or use '?' for one character."
            )
        ch = segment[i]
        if ch == "]" and not first:
            break
        first = False
        if ord(ch) > 127:
            raise invalid(raw, "has a non-ASCII character in a '[...]' class", "Use '?' or '*' for such characters.")
        if i + 2 < len(segment) and segment[i + 1] == "-" and segment[i + 2] != "]":
            lo, hi = ord(ch), ord(segment[i + 2])
            if hi > 127:
                raise invalid(
                    raw, "has a non-ASCII character in a '[...]' class", "Use '?' or '*' for such characters."
                )
            if lo > hi:
                raise invalid(
                    raw, f"has the reversed range '{ch}-{segment[i + 2]}'", "Write ranges low to high, e.g. '[a-z]'."
                )
            ranges.append((lo, hi))
            i += 3
        else:
            ranges.append((ord(ch), ord(ch)))
            i += 1
    return (negated, tuple(sorted(ranges))), i + 1


@dataclass(frozen=True, slots=True)
class Compiled:
    """A normalised pattern as segments: its glob reading and its literal reading."""

    text: str
    glob: tuple[Segment, ...]
    literal: tuple[Segment, ...]
    virtual: bool


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Compiled:
    if is_virtual(pattern):
        return Compiled(pattern, (), (), True)
    parts = pattern.split("/")
    glob = tuple(GLOBSTAR if p == GLOBSTAR else tokenize(p, pattern) for p in parts)
    literal = tuple(tuple((False, ((ord(c), ord(c)),)) for c in p) for p in parts)
    return Compiled(pattern, glob, literal, False)


def chars_meet(a: CharToken, b: CharToken) -> bool:
    """Whether some single character satisfies both character tokens."""
    (neg_a, ra), (neg_b, rb) = a, b
    if neg_a and neg_b:
        return True  # each excludes finitely many characters
    if neg_a or neg_b:
        positive, negative = (rb, ra) if neg_a else (ra, rb)
        return any(not range_covered(lo, hi, negative) for lo, hi in positive)
    return any(lo1 <= hi2 and lo2 <= hi1 for lo1, hi1 in ra for lo2, hi2 in rb)


def range_covered(lo: int, hi: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    """Whether every code point lo..hi lies in the union of the (sorted) ranges."""
    point = lo
    for rlo, rhi in ranges:
        if rlo <= point <= rhi:
            point = rhi + 1
            if point > hi:
                return True
    return False


def segments_meet(a: tuple[Token, ...], b: tuple[Token, ...]) -> bool:
    """Whether some non-empty segment text matches both segment globs.

    A table filled from the ends, one row at a time (``row[j]``: the rests ``a[i:]`` and
    ``b[j:]`` meet), not a recursive walk: segments of hundreds of characters would need a
    call depth beyond Python's limit. Two all-star segments meet on the empty text only if
    they also meet on "x": always true."""
    na, nb = len(a), len(b)
    below = [False] * (nb + 1)  # row i + 1
    for i in range(na, -1, -1):
        row = [False] * (nb + 1)
        for j in range(nb, -1, -1):
            if i == na and j == nb:
                row[j] = True
            elif i < na and a[i] == STAR:
                row[j] = below[j] or (j < nb and row[j + 1])
            elif j < nb and b[j] == STAR:
                row[j] = row[j + 1] or (i < na and below[j])
            elif i < na and j < nb:
                row[j] = below[j + 1] and chars_meet(a[i], b[j])  # type: ignore[arg-type]
        below = row
    return below[0]


def paths_meet(a: tuple[Segment, ...], b: tuple[Segment, ...]) -> bool:
    """Whether some path (a list of non-empty segments) matches both segment lists."""

    @cache
    def walk(i: int, j: int) -> bool:
        if i == len(a) and j == len(b):
            return True
        if i < len(a) and a[i] == GLOBSTAR:
            return walk(i + 1, j) or (j < len(b) and walk(i, j + 1))
        if j < len(b) and b[j] == GLOBSTAR:
            return walk(i, j + 1) or (i < len(a) and walk(i + 1, j))
        if i < len(a) and j < len(b):
            return segments_meet(a[i], b[j]) and walk(i + 1, j + 1)  # type: ignore[arg-type]
        return False

    return walk(0, 0)


def readings(compiled: Compiled) -> list[tuple[Segment, ...]]:
    """The glob reading, and the literal one when it differs (a path matches either)."""
    if compiled.glob == compiled.literal:
        return [compiled.glob]
    return [compiled.glob, compiled.literal]


def overlaps(a: str, b: str) -> bool:
    """Whether some path matches both normalised patterns (exact)."""
    ca, cb = compile_pattern(a), compile_pattern(b)
    if ca.virtual or cb.virtual:
        return a == b
    return any(paths_meet(ra, rb) for ra in readings(ca) for rb in readings(cb))


def matches(pattern: str, path: str) -> bool:
    """Whether a concrete repository path (e.g. a staged file) matches a normalised pattern."""
    cp = compile_pattern(pattern)
    if cp.virtual:
        return pattern == path
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        return False
    literal_path = tuple(tuple((False, ((ord(c), ord(c)),)) for c in p) for p in parts)
    return any(paths_meet(reading, literal_path) for reading in readings(cp))


# -- work of an overlap test ---------------------------------------------------------------------
# The twin of pattern_weights / pair_steps in lib/globs.lua, which reserve.lua uses to refuse a
# call before matching when the pairs it would compare cost more than its step budget.


def glob_weight(pattern: str) -> int:
    """Characters plus one of each segment that holds a wildcard ('**' segments excluded)."""
    return sum(len(p) + 1 for p in pattern.split("/") if p != GLOBSTAR and has_wildcards(p))


def total_weight(pattern: str) -> int:
    """Characters plus one of each segment ('**' too: the literal reading compares it as text)."""
    return sum(len(p) + 1 for p in pattern.split("/"))


def pair_steps(a: str, b: str) -> int:
    """An upper bound on the table cells segments_meet fills when overlaps(a, b) runs (both
    readings of each): a cell for every character pair of two segments of which one holds a
    wildcard, over every pair of readings. Equal, virtual and plain-path pairs cost none."""
    if a == b or is_virtual(a) or is_virtual(b):
        return 0
    # one reading of a pattern without wildcards, two (glob and literal) of one with any
    wa, wb = int(has_wildcards(a)), int(has_wildcards(b))
    return (1 + wb) * glob_weight(a) * total_weight(b) + (1 + wa) * total_weight(a) * glob_weight(b)


def literal_prefix(pattern: str) -> str:
    """The leading segments free of wildcards, joined by '/': the reservation index bucket."""
    if is_virtual(pattern):
        return pattern
    prefix: list[str] = []
    for part in pattern.split("/"):
        if has_wildcards(part):
            break
        prefix.append(part)
    return "/".join(prefix)


def index_bucket(pattern: str) -> str:
    """The reservation index bucket (see broker/scripts/lib/reservations.lua): the literal prefix,
    or for tool:// and friends the name after a \\x01 byte, which no path bucket starts with."""
    return "\x01" + pattern if is_virtual(pattern) else literal_prefix(pattern)
