"""Migration 2: PostgreSQL's full-text words are FTS5's words.

PostgreSQL's default text-search parser keeps ``src/app.py``, ``v1.2.3``, ``ops@example.com``
or a URL as one word (and a few of their parts), where FTS5's ``unicode61`` tokenizer splits at
every character that is not a letter or digit; searching ``app`` then found a message on SQLite
and not on PostgreSQL. ``fts_words(text)`` turns every ASCII punctuation character into a space
before ``to_tsvector('simple', ...)``, so both engines index the same words (what still differs:
docs/compatibility.md, "Search on PostgreSQL"). The trigger is redefined and every document
rebuilt. SQLite: nothing to do.
"""

from __future__ import annotations

from typing import Any

from broker.persistence.index.schema_postgresql import FTS_BODY_CHARS

# the 32 ASCII punctuation characters, each turned into a space by translate()
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
DOCUMENT = (
    "setweight(to_tsvector('simple', fts_words({subject})), 'A') || "
    f"setweight(to_tsvector('simple', fts_words(left({{body}}, {FTS_BODY_CHARS}))), 'B')"
)
SQL = f"""
CREATE OR REPLACE FUNCTION fts_words(t text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $words$
  SELECT translate(t, {"'" + PUNCTUATION.replace("'", "''") + "'"}, '{" " * len(PUNCTUATION)}')
$words$;

CREATE OR REPLACE FUNCTION fts_messages_sync() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
  IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.id <> NEW.id) THEN
    DELETE FROM fts_messages WHERE message_id = OLD.id;
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  INSERT INTO fts_messages (message_id, document)
  VALUES (NEW.id, {DOCUMENT.format(subject="NEW.subject", body="NEW.body_md")})
  ON CONFLICT (message_id) DO UPDATE SET document = EXCLUDED.document;
  RETURN NEW;
END
$body$;

UPDATE fts_messages f SET document = {DOCUMENT.format(subject="m.subject", body="m.body_md")}
FROM messages m WHERE m.id = f.message_id;
"""


def postgresql(conn: Any) -> None:
    conn.sa.connection.dbapi_connection.cursor().execute(SQL)


def sqlite(conn: Any) -> None:
    """FTS5's unicode61 tokenizer already splits words this way."""
