"""A small Lua 5.1 tokenizer for static checks of broker/scripts (not a parser): comments are
dropped, strings become one token holding their decoded text."""

from __future__ import annotations

import re
from dataclasses import dataclass

KEYWORDS = frozenset(
    [
        "and",
        "break",
        "do",
        "else",
        "elseif",
        "end",
        "false",
        "for",
        "function",
        "if",
        "in",
        "local",
        "nil",
        "not",
        "or",
        "repeat",
        "return",
        "then",
        "true",
        "until",
        "while",
    ]
)

_NAME = re.compile(r"[A-Za-z_]\w*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LONG_OPEN = re.compile(r"\[(=*)\[")
_OPERATORS = ("...", "..", "==", "~=", "<=", ">=")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "name", "string", "number" or "op"
    text: str  # a string token holds its decoded value
    line: int


def _quoted(src: str, start: int) -> tuple[str, int]:
    """The decoded text of the quoted string at ``start`` and the index after it."""
    quote, i, out = src[start], start + 1, []
    while src[i] != quote:
        if src[i] == "\n":
            raise ValueError(f"unfinished string at offset {start}")
        if src[i] != "\\":
            out.append(src[i])
            i += 1
            continue
        nxt = src[i + 1]
        digits = re.match(r"\d{1,3}", src[i + 1 :])
        if digits:
            out.append(chr(int(digits.group())))
            i += 1 + len(digits.group())
        else:
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
    return "".join(out), i + 1


def tokenize(src: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(src)

    def line() -> int:
        return src.count("\n", 0, i) + 1

    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif src.startswith("--", i):
            long = _LONG_OPEN.match(src, i + 2)
            if long:
                i = src.index("]" + long.group(1) + "]", long.end()) + len(long.group(1)) + 2
            else:
                end = src.find("\n", i)
                i = n if end < 0 else end
        elif c in "\"'":
            text, end = _quoted(src, i)
            tokens.append(Token("string", text, line()))
            i = end
        elif long := _LONG_OPEN.match(src, i):
            close = src.index("]" + long.group(1) + "]", long.end())
            tokens.append(Token("string", src[long.end() : close].removeprefix("\n"), line()))
            i = close + len(long.group(1)) + 2
        elif name := _NAME.match(src, i):
            tokens.append(Token("name", name.group(), line()))
            i = name.end()
        elif number := _NUMBER.match(src, i):
            tokens.append(Token("number", number.group(), line()))
            i = number.end()
        else:
            op = next((o for o in _OPERATORS if src.startswith(o, i)), c)
            tokens.append(Token("op", op, line()))
            i += len(op)
    return tokens


def is_ref(tokens: list[Token], k: int) -> bool:
    """Whether tokens[k] is a name used as a variable (not a keyword, not a field after . or :)."""
    tok = tokens[k]
    if tok.kind != "name" or tok.text in KEYWORDS:
        return False
    return k == 0 or tokens[k - 1].text not in (".", ":")


def is_call(tokens: list[Token], k: int) -> bool:
    """Whether tokens[k] is a variable called as ``name(`` (not the name of a definition)."""
    return (
        is_ref(tokens, k)
        and k + 1 < len(tokens)
        and tokens[k + 1].text == "("
        and (k == 0 or tokens[k - 1].text != "function")
    )


def definitions(tokens: list[Token]) -> dict[str, int]:
    """Each name defined as a local (function, variable, parameter, loop variable) or as a global
    function, with the index of the token where it is first defined. Scopes are ignored."""
    found: dict[str, int] = {}

    def define(name: str, at: int) -> None:
        found.setdefault(name, at)

    k = 0
    while k < len(tokens):
        tok = tokens[k]
        if tok.text == "function" and tok.kind == "name":
            j = k + 1
            if tokens[j].kind == "name":
                if tokens[j + 1].text not in (".", ":"):
                    define(tokens[j].text, k)
                while tokens[j].text != "(":
                    j += 1
            while tokens[j].text != ")":  # parameters
                if tokens[j].kind == "name":
                    define(tokens[j].text, k)
                j += 1
        elif tok.text in ("local", "for") and tok.kind == "name" and tokens[k + 1].text != "function":
            j = k + 1
            while (tokens[j].kind == "name" and tokens[j].text not in KEYWORDS) or tokens[j].text == ",":
                if tokens[j].kind == "name":
                    define(tokens[j].text, k)
                j += 1
        k += 1
    return found
