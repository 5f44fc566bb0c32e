"""The FTS5 query syntax as a PostgreSQL tsquery (broker/history/tsquery.py), without a database:
what each construct becomes, and that FTS5's refusals are refusals here too (the search then
takes the LIKE fallback on both engines). tests/test_search_backends.py runs the same queries on
SQLite and PostgreSQL and compares the message ids."""

from __future__ import annotations

import sqlite3

import pytest

from broker.history.tsquery import FtsSyntaxError, to_tsquery_text, words


def test_words_phrases_prefixes_and_columns() -> None:
    assert to_tsquery_text("Deploy") == "'deploy'"
    assert to_tsquery_text("deploy plan") == "('deploy' & 'plan')"
    assert to_tsquery_text('"secret plan"') == "(('secret':A <-> 'plan':A) | ('secret':B <-> 'plan':B))"
    assert to_tsquery_text("a + b") == to_tsquery_text('"a b"')
    assert to_tsquery_text("revi*") == "'revi':*"
    assert to_tsquery_text("revi *") == "'revi':*"  # FTS5 takes the star after a space too
    assert to_tsquery_text('"src app"*') == "(('src':A <-> 'app':*A) | ('src':B <-> 'app':*B))"
    assert to_tsquery_text("subject:deploy AND body:step") == "('deploy':A & 'step':B)"
    assert to_tsquery_text("-subject:plan") == "'plan':B"
    assert to_tsquery_text("{subject body}:plan") == "'plan'"  # both columns: no filter
    assert to_tsquery_text('"POL-358"') == "(('pol':A <-> '358':A) | ('pol':B <-> '358':B))"
    assert to_tsquery_text("under_score") == "(('under':A <-> 'score':A) | ('under':B <-> 'score':B))"


def test_boolean_operators_keep_fts5_precedence() -> None:
    assert to_tsquery_text("a OR b AND c") == "('a' | ('b' & 'c'))"  # AND binds tighter than OR
    assert to_tsquery_text("a NOT b c") == "('a' & !('b' & 'c'))"  # NOT's right side is the whole run
    assert to_tsquery_text("a AND b NOT c") == "('a' & ('b' & !'c'))"  # NOT binds tightest
    assert to_tsquery_text("(a OR b) AND c") == "(('a' | 'b') & 'c')"
    assert to_tsquery_text("subject:(a OR b)") == "('a':A | 'b':A)"


def test_near_is_every_gap_up_to_the_distance_in_one_column() -> None:
    text = to_tsquery_text("NEAR(a b, 1)")
    assert text is not None
    for gap in ("'a':A <0> 'b':A", "'a':A <2> 'b':A", "'b':A <2> 'a':A", "'a':B <1> 'b':B"):
        assert gap in text
    assert "<3>" not in text
    assert to_tsquery_text("NEAR(a b, 500)") == "(('a':A & 'b':A) | ('a':B & 'b':B))"  # past NEAR_EXPAND


def test_what_can_match_nothing_is_none() -> None:
    assert to_tsquery_text("message_id:1") is None  # FTS5's UNINDEXED column holds no words
    assert to_tsquery_text('"..."') is None
    assert to_tsquery_text('plan AND "..."') is None  # an empty phrase under AND: no match (as FTS5)
    assert to_tsquery_text('plan "..."') == "'plan'"  # beside others it drops out (as FTS5)
    assert to_tsquery_text('plan OR "..."') == "'plan'"
    assert to_tsquery_text("subject:(body:plan)") is None


@pytest.mark.parametrize(
    "query",
    ["(plan) deploy", "deploy (plan)", "NOT plan", "plan NOT", "plan AND", "OR", "near(a b)", "pl* *", "a:b",
     "step.one", "NEAR(a d, x)", "NEAR(a d,)", "()", "'", '"plan', "sub*:plan", "NEAR(^a b)", "{}:plan",
     "deploy subject:(plan)", "one -step", "%", "plan NOT NOT deploy"],
)  # fmt: skip
def test_what_fts5_refuses_is_refused(query: str) -> None:
    fts = sqlite3.connect(":memory:")
    fts.execute("CREATE VIRTUAL TABLE f USING fts5(message_id UNINDEXED, subject, body)")
    with pytest.raises(sqlite3.OperationalError):
        fts.execute("SELECT * FROM f WHERE f MATCH ?", (query,)).fetchall()
    with pytest.raises(FtsSyntaxError):
        to_tsquery_text(query)


def test_lexemes_are_quoted_words_only() -> None:
    # whatever the user types, the tsquery holds quoted runs of letters and digits and our operators
    text = to_tsquery_text("\"it's a \\' & ! | <-> :* test\" OR 東京 OR naïve")
    assert text is not None
    assert "'it' <-> 's'" in text.replace(":A", "").replace(":B", "") and "'東京'" in text and "'naïve'" in text
    assert words("Ünï-CÖDÉ x_y 3.14") == ["ünï", "cödé", "x", "y", "3", "14"]
