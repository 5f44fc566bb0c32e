"""The FTS5 query syntax as a PostgreSQL tsquery (broker/history/tsquery.py): what each construct
becomes and that FTS5's refusals are refusals here too (the search then takes the LIKE fallback
on both engines), without a database; then random queries run on FTS5 and on the real
PostgreSQL schema. tests/test_search_backends.py runs searches through the tool on both."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest
from index_helpers import end_connections, new_schema_url

from broker.history.tsquery import FtsSyntaxError, to_tsquery_text, words
from broker.persistence.index import Index


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


DOCS = {  # id: (subject, body)
    1: ("Deploy plan", "step one src/app.py"),
    2: ("hello world", "a b x c d"),
    3: ("café", "naïve under_score 東京"),
    4: ("x", "plan deploy"),
    5: ("Deploy POL-358 plan", "- step one\n- [ ] TODO write `src/app.py`\n@GreenCastle please review"),
    6: ("Re: Deploy", "- [x] done\nNEXT: ship it"),
    7: ("v1.2.3 release", "user@example.com wrote https://x.org/p?q=1 about 3.14"),
    8: ("a b c", "c b a"),
    9: ("plan plan plan", "deploy deploy"),
}
WORDS = ["plan", "deploy", "step", "one", "src", "app", "py", "a", "b", "c", "d", "x", "hello", "pl", "de", "358",
         "ship", "done", "review", "v1", "3", "14", "example", "zz"]  # fmt: skip


def _random_query(rng: random.Random, depth: int = 0) -> str:
    def atom() -> str:
        r = rng.random()
        if r < 0.45:
            return rng.choice(WORDS) + ("*" if rng.random() < 0.2 else "")
        if r < 0.6:
            return '"' + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) + '"'
        if r < 0.7:
            return rng.choice(["subject:", "body:", "-subject:", "{subject body}:", "message_id:"]) + rng.choice(WORDS)
        if r < 0.8:
            gap = f", {rng.randint(0, 4)}" if rng.random() < 0.7 else ""
            return "NEAR(" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))) + gap + ")"
        if r < 0.9 and depth < 2:
            return "(" + _random_query(rng, depth + 1) + ")"
        return rng.choice(WORDS) + " + " + rng.choice(WORDS)

    query = atom()
    for _ in range(rng.randint(0, 3)):
        query += rng.choice([" ", " AND ", " OR ", " NOT "]) + atom()
    return query


@pytest.mark.postgresql
def test_random_queries_match_the_same_rows_as_fts5(pg_database: str) -> None:
    """800 random queries of the accepted syntax over the same rows: FTS5 in SQLite, and the
    translation against the real PostgreSQL schema (its trigger and migrations): the same rows,
    or a refusal on both. ``^`` and accents, which differ by design, are not generated."""
    fts = sqlite3.connect(":memory:")
    fts.execute("CREATE VIRTUAL TABLE f USING fts5(message_id UNINDEXED, subject, body)")
    for key, (subject, body) in DOCS.items():
        fts.execute("INSERT INTO f (rowid, message_id, subject, body) VALUES (?, ?, ?, ?)", (key, key, subject, body))
    url = new_schema_url(pg_database)
    index = Index(url)
    index.ensure_schema()
    with index.transaction() as conn:
        conn.execute("INSERT INTO projects (id, slug, human_key, created_at) VALUES (1, 'p', '/p', 't')")
        conn.execute(
            "INSERT INTO messages (id, project_id, sender_id, subject, body_md, created_ts) "
            "VALUES (:id, 1, 1, :subject, :body, 't')",
            [{"id": k, "subject": s, "body": b} for k, (s, b) in DOCS.items()],
        )
    rng = random.Random(19)
    refused = 0
    try:
        for _ in range(800):
            query = _random_query(rng)
            try:
                expected: Any = sorted(r[0] for r in fts.execute("SELECT rowid FROM f WHERE f MATCH ?", (query,)))
            except sqlite3.OperationalError:
                expected = "refused"
                refused += 1
            try:
                text = to_tsquery_text(query)
                sql = "SELECT message_id FROM fts_messages WHERE document @@ to_tsquery('simple', :q)"
                found: Any = sorted(r[0] for r in index.query(sql, {"q": text})) if text else []
            except FtsSyntaxError:
                found = "refused"
            assert found == expected, (query, text)
    finally:
        index.close()
        end_connections(url)
    assert 50 < refused < 600  # both kinds were exercised
