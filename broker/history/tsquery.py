"""The FTS5 query syntax search_messages accepts, as a PostgreSQL ``tsquery``.

``to_tsquery_text(query)`` reads a (sanitised) query the way SQLite's FTS5 reads it, and raises
``FtsSyntaxError`` exactly where FTS5 would refuse it (the caller then takes the same LIKE
fallback as on SQLite). The result is a string for ``to_tsquery('simple', :q)``, bound as a
parameter: user text never reaches the SQL, and every lexeme in it is a quoted run of letters
and digits, so it cannot carry tsquery operators either. ``None`` means "matches nothing".

The PostgreSQL document vector (broker/persistence/index) holds the subject with weight A and
the body with weight B, both lower-cased by the ``simple`` configuration after every ASCII
character that is not a letter or digit became a space, so its words are FTS5's unicode61 words.
What maps onto what:

- ``word``, ``"quoted phrase"``, ``a + b``  -> lexemes joined by ``<->``, per column (an FTS5
  phrase never spans two columns);
- ``term*`` -> ``'term':*``;  ``AND`` / implicit AND -> ``&``;  ``OR`` -> ``|``;  ``a NOT b`` ->
  ``a & !b``; parentheses as written (FTS5's precedence: NOT, then AND, then OR);
- ``subject:x``, ``body:x``, ``{subject body}:x``, ``-subject:x`` -> weight filters (``:A``,
  ``:B``); ``message_id`` holds no words, as in FTS5;
- ``NEAR(p q, N)`` -> in one column, ``p <d> q | q <d> p`` for every d up to N + 1 (three or
  more phrases: every pair near; N over NEAR_EXPAND: all in one column);
- ``^phrase`` (first word of a column) -> the phrase anywhere: tsquery cannot anchor.

docs/compatibility.md ("Search on PostgreSQL") lists where the engines still differ.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

COLUMNS = {"message_id": "", "subject": "A", "body": "B"}  # FTS5 column -> tsvector weight
ALL_COLUMNS = frozenset(COLUMNS)
NEAR_DEFAULT = 10
NEAR_EXPAND = 50  # NEAR distances above this match "all phrases in one column"
WHITESPACE = " \t\n\r\f\v"
PUNCTUATION = "(){}:,+*-^"


class FtsSyntaxError(ValueError):
    """The query is not FTS5 syntax (FTS5 would raise an error for it)."""


# -- lexer -----------------------------------------------------------------------------------
@dataclass
class Token:
    kind: str  # one of PUNCTUATION, "STRING", "AND", "OR", "NOT", "EOF"
    text: str = ""
    bare: bool = False


def _bareword(ch: str) -> bool:
    return (ch.isascii() and (ch.isalnum() or ch in "_\x1a")) or not ch.isascii()


def lex(query: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch in WHITESPACE:
            i += 1
        elif ch in PUNCTUATION:
            tokens.append(Token(ch))
            i += 1
        elif ch == '"':
            text, i = [], i + 1
            while True:
                if i >= n:
                    raise FtsSyntaxError("unterminated string")
                if query[i] == '"':
                    if i + 1 < n and query[i + 1] == '"':
                        text.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                text.append(query[i])
                i += 1
            tokens.append(Token("STRING", "".join(text)))
        elif _bareword(ch):
            start = i
            while i < n and _bareword(query[i]):
                i += 1
            word = query[start:i]
            tokens.append(Token(word, word) if word in ("AND", "OR", "NOT") else Token("STRING", word, bare=True))
        else:
            raise FtsSyntaxError(f"syntax error near {ch!r}")
    tokens.append(Token("EOF"))
    return tokens


def words(text: str) -> list[str]:
    """unicode61's words of a string: runs of letters, digits and private-use characters
    (combining marks stay with their letter), lower-cased."""
    out, current = [], []
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] in "LN" or (category in ("Co", "Mn") and (current or category == "Co")):
            current.append(ch)
        elif current:
            out.append("".join(current).lower())
            current = []
    if current:
        out.append("".join(current).lower())
    return out


# -- syntax tree -----------------------------------------------------------------------------
@dataclass
class Phrase:
    terms: list[tuple[str, bool]]  # (word, prefix)
    columns: frozenset[str] = ALL_COLUMNS


@dataclass
class Near:
    phrases: list[Phrase]
    distance: int
    columns: frozenset[str] = ALL_COLUMNS


@dataclass
class Implicit:  # a run of phrases/NEAR groups side by side: empty phrases drop out
    items: list[Phrase | Near] = field(default_factory=list)


@dataclass
class Binary:
    op: str  # AND, OR, NOT
    left: Node
    right: Node


Node = Phrase | Near | Implicit | Binary


class Parser:
    """FTS5's grammar (fts5parse.y): OR < AND < NOT, all left-associative; a parenthesised or
    column-filtered ``(...)`` group is a whole operand, never part of an implicit AND."""

    def __init__(self, query: str) -> None:
        self.tokens = lex(query)
        self.pos = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self, kind: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            raise FtsSyntaxError(f"syntax error near {token.text or token.kind!r}")
        self.pos += 1
        return token

    def parse(self) -> Node:
        node = self.expr()
        self.take("EOF")
        return node

    def expr(self) -> Node:
        node = self.conjunction()
        while self.peek().kind == "OR":
            self.pos += 1
            node = Binary("OR", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.negation()
        while self.peek().kind == "AND":
            self.pos += 1
            node = Binary("AND", node, self.negation())
        return node

    def negation(self) -> Node:
        node = self.operand()
        while self.peek().kind == "NOT":
            self.pos += 1
            node = Binary("NOT", node, self.operand())
        return node

    def operand(self) -> Node:
        token = self.peek()
        if token.kind == "(":
            self.pos += 1
            node = self.expr()
            self.take(")")
            return node
        columns = self.colset()
        if columns is not None and self.peek().kind == "(":
            self.pos += 1
            node = self.expr()
            self.take(")")
            return _restrict(node, columns)
        items = [self.nearset(columns)]
        while self.peek().kind in ("STRING", "^", "-", "{"):
            columns = self.colset()
            if columns is not None and self.peek().kind == "(":
                raise FtsSyntaxError("syntax error near '('")
            items.append(self.nearset(columns))
        return items[0] if len(items) == 1 else Implicit(items)

    def colset(self) -> frozenset[str] | None:
        """``col:``, ``-col:``, ``{a b}:``, ``-{a b}:`` (the colon consumed), or None."""
        start, negate = self.pos, False
        if self.peek().kind == "-":
            negate = True
            self.pos += 1
        if self.peek().kind == "{":
            self.pos += 1
            names = [self.take("STRING").text]
            while self.peek().kind == "STRING":
                names.append(self.take("STRING").text)
            self.take("}")
        elif self.peek().kind == "STRING" and self.peek(1).kind == ":":
            names = [self.take("STRING").text]
        elif negate:
            raise FtsSyntaxError("syntax error near '-'")
        else:
            self.pos = start
            return None
        self.take(":")
        chosen = set()
        for name in names:
            if name.lower() not in COLUMNS:
                raise FtsSyntaxError(f"no such column: {name}")
            chosen.add(name.lower())
        return ALL_COLUMNS - chosen if negate else frozenset(chosen)

    def nearset(self, columns: frozenset[str] | None) -> Phrase | Near:
        columns = ALL_COLUMNS if columns is None else columns
        if self.peek().kind == "^":  # first word of a column: not expressible, see the module doc
            self.pos += 1
            return self.phrase(columns)
        token = self.peek()
        if token.kind == "STRING" and token.bare and token.text == "NEAR" and self.peek(1).kind == "(":
            self.pos += 2
            phrases = [self.phrase(columns)]
            while self.peek().kind == "STRING":
                phrases.append(self.phrase(columns))
            distance = NEAR_DEFAULT
            if self.peek().kind == ",":
                self.pos += 1
                text = self.take("STRING").text
                if not (text.isascii() and text.isdigit()):
                    raise FtsSyntaxError(f'expected integer, got "{text}"')
                distance = int(text)
            self.take(")")
            return Near(phrases, distance, columns)
        return self.phrase(columns)

    def phrase(self, columns: frozenset[str]) -> Phrase:
        terms: list[tuple[str, bool]] = []
        while True:
            found = words(self.take("STRING").text)
            prefix = self.peek().kind == "*"
            if prefix:
                self.pos += 1
            terms += [(w, prefix and i == len(found) - 1) for i, w in enumerate(found)]
            if self.peek().kind != "+":
                return Phrase(terms, columns)
            self.pos += 1


def _restrict(node: Node, columns: frozenset[str]) -> Node:
    """A column filter on a group: every phrase inside searches the intersection."""
    if isinstance(node, Phrase | Near):
        node.columns = node.columns & columns
    elif isinstance(node, Implicit):
        for item in node.items:
            _restrict(item, columns)
    else:
        _restrict(node.left, columns)
        _restrict(node.right, columns)
    return node


# -- translation -----------------------------------------------------------------------------
EMPTY = ""  # a phrase without words: dropped beside others, "no match" under AND / alone
FALSE = None  # matches nothing


def to_tsquery_text(query: str) -> str | None:
    """The tsquery text for ``query`` (FTS5 syntax), or None when it can match nothing.
    Raises FtsSyntaxError where FTS5 raises a syntax or column error."""
    result = _translate(Parser(query).parse())
    return result or None


def _weights(columns: frozenset[str]) -> list[str]:
    return sorted(w for c in columns if (w := COLUMNS[c]))


def _lexeme(word: str, prefix: bool, weight: str) -> str:
    # words are letters and digits only; quoting still guards against any tsquery meaning
    quoted = "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"
    suffix = ("*" if prefix else "") + weight
    return f"{quoted}:{suffix}" if suffix else quoted


def _phrase_in(phrase: Phrase, weight: str) -> str:
    parts = [_lexeme(w, p, weight) for w, p in phrase.terms]
    return parts[0] if len(parts) == 1 else "(" + " <-> ".join(parts) + ")"


def _any(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"


def _all(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + " & ".join(parts) + ")"


def _translate(node: Node) -> str | None:
    if isinstance(node, Phrase):
        if not node.terms:
            return EMPTY
        weights = _weights(node.columns)
        if not weights:
            return FALSE
        if len(weights) == len(_weights(ALL_COLUMNS)) and len(node.terms) == 1:
            return _phrase_in(node, "")  # one word anywhere: no weight filter needed
        return _any([_phrase_in(node, w) for w in weights])
    if isinstance(node, Near):
        return _near(node)
    if isinstance(node, Implicit):
        parts = [_translate(item) for item in node.items]
        if any(p is FALSE for p in parts):
            return FALSE
        kept = [p for p in parts if p]
        return _all(kept) if kept else EMPTY
    left, right = _translate(node.left), _translate(node.right)
    if node.op == "AND":
        return f"({left} & {right})" if left and right else FALSE
    if node.op == "OR":
        kept = [p for p in (left, right) if p]
        return _any(kept) if kept else FALSE
    if not left:  # NOT
        return FALSE
    return f"({left} & !{right})" if right else left


def _near(node: Near) -> str | None:
    phrases = [p for p in node.phrases if p.terms]
    if not phrases:
        return EMPTY
    per_column = []
    for weight in _weights(node.columns):
        own = [_phrase_in(p, weight) for p in phrases]
        if len(own) == 1 or node.distance > NEAR_EXPAND:
            per_column.append(_all(own))
            continue
        pairs = []
        for i in range(len(own)):
            for j in range(i + 1, len(own)):
                a, b = own[i], own[j]
                # FTS5 lets near phrases overlap (NEAR(a a) matches one "a"): distance 0 too
                gaps = [f"{a} <0> {b}"] + [
                    f"{x} <{d}> {y}" for d in range(1, node.distance + 2) for x, y in ((a, b), (b, a))
                ]
                pairs.append(_any(gaps))
        per_column.append(_all(pairs))
    return _any(per_column) if per_column else FALSE
