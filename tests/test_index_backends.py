"""The index layer on both backends (SQLite file, PostgreSQL schema): the query API, write_batch's
idempotent upserts and re-keying, versioned migrations (also from an SQLite file made before
they existed), the drain lock, and what start-up says about a DATABASE_URL it cannot use."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import make_settings
from index_helpers import end_connections

from broker.config import Settings
from broker.errors import BrokerError
from broker.persistence.index import Batch, Index, migrations, recipient_order
from broker.persistence.index.schema_sqlite import SCHEMA as SQLITE_SCHEMA

T0 = "2026-01-01T00:00:00+00:00"
T1 = "2026-01-02T00:00:00+00:00"


def project(pid: int, slug: str = "p") -> dict[str, Any]:
    return {"id": pid, "slug": slug, "human_key": f"/{slug}", "created_at": T0, "archived_at": None}


def agent(aid: int, pid: int, name: str, active: str = T0) -> dict[str, Any]:
    return {
        "id": aid, "project_id": pid, "name": name, "program": "x", "model": "y", "task_description": "",
        "inception_ts": T0, "last_active_ts": active, "attachments_policy": "auto", "contact_policy": "auto",
        "registration_token": None, "retired_at": None,
    }  # fmt: skip


def message(mid: int, pid: int, sender: int, subject: str = "hello", created: str = T0) -> dict[str, Any]:
    return {
        "id": mid, "project_id": pid, "sender_id": sender, "thread_id": None, "topic": None, "subject": subject,
        "body_md": f"body of {subject}", "importance": "normal", "ack_required": 1, "created_ts": created,
        "attachments": "[]",
    }  # fmt: skip


def recipient(mid: int, aid: int, read: str | None = None, ack: str | None = None) -> dict[str, Any]:
    return {"message_id": mid, "agent_id": aid, "kind": "to", "read_ts": read, "ack_ts": ack}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No Redis here: the index layer alone (index_settings puts it on each backend)."""
    return make_settings("memory://unused", tmp_path)


@pytest.fixture
def index(index_settings: Settings) -> Any:
    opened = Index.from_settings(index_settings)
    opened.ensure_schema()
    yield opened
    opened.close()


def rows(index: Index, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [dict(r) for r in index.query(sql, params)]


def test_rows_read_by_name_position_and_as_dict(index: Index) -> None:
    index.write_batch(Batch(projects=[project(1)]))
    row = index.query("SELECT id, slug AS name FROM projects WHERE slug = :slug", {"slug": "p"})[0]
    assert (row["id"], row[1], dict(row), row.keys()) == (1, "p", {"id": 1, "name": "p"}, ["id", "name"])
    assert index.dialect in ("sqlite", "postgresql")


def test_a_transaction_that_raises_writes_nothing(index: Index) -> None:
    with pytest.raises(RuntimeError), index.transaction() as conn:
        conn.execute("INSERT INTO projects (id, slug, human_key, created_at) VALUES (5, 'q', '/q', :t)", {"t": T0})
        raise RuntimeError("stop")
    assert rows(index, "SELECT id FROM projects") == []


def test_a_replayed_batch_changes_nothing_and_first_read_and_ack_stay(index: Index) -> None:
    batch = Batch(
        projects=[project(1)],
        agents=[agent(10, 1, "BlueLake"), agent(11, 1, "GreenCastle")],
        messages=[message(100, 1, 10)],
        recipients=[recipient(100, 11, read=T0)],
        activity=[(10, T1)],
    )
    index.write_batch(batch)
    index.write_batch(batch)
    later = Batch(
        agents=[agent(10, 1, "BlueLake", active=T0)],  # an older profile's activity never wins
        messages=[message(100, 1, 10, subject="changed")],  # messages are immutable
        recipients=[recipient(100, 11, read=T1, ack=T1)],
    )
    index.write_batch(later)
    assert rows(index, "SELECT id, subject, ack_required FROM messages") == [
        {"id": 100, "subject": "hello", "ack_required": 1}
    ]
    assert type(index.query("SELECT ack_required FROM messages")[0][0]) is int  # 1/0 on both backends, not True
    assert rows(index, "SELECT read_ts, ack_ts FROM message_recipients") == [{"read_ts": T0, "ack_ts": T1}]
    assert rows(index, "SELECT last_active_ts FROM agents WHERE id = 10") == [{"last_active_ts": T1}]
    assert rows(index, "SELECT count(*) AS n FROM agents") == [{"n": 2}]


def test_an_agent_registered_again_takes_its_mail_along(index: Index) -> None:
    index.write_batch(
        Batch(
            projects=[project(1)],
            agents=[agent(10, 1, "BlueLake"), agent(11, 1, "GreenCastle")],
            messages=[message(100, 1, 10)],
            recipients=[recipient(100, 11), recipient(100, 10)],
        )
    )
    # Redis lost BlueLake; it came back as 20, and a recipient row for 20 exists already
    index.write_batch(Batch(agents=[agent(20, 1, "bluelake")], recipients=[recipient(100, 20, read=T1)]))
    assert rows(index, "SELECT id FROM agents ORDER BY id") == [{"id": 11}, {"id": 20}]
    assert rows(index, "SELECT sender_id FROM messages") == [{"sender_id": 20}]
    assert rows(index, "SELECT agent_id, read_ts FROM message_recipients ORDER BY agent_id") == [
        {"agent_id": 11, "read_ts": None},
        {"agent_id": 20, "read_ts": T1},
    ]


def test_a_project_created_again_under_its_slug_takes_its_history_along(index: Index) -> None:
    index.write_batch(Batch(projects=[project(1)], agents=[agent(10, 1, "BlueLake")], messages=[message(7, 1, 10)]))
    index.write_batch(Batch(projects=[project(2)], agents=[agent(20, 2, "BlueLake")]))
    assert rows(index, "SELECT id, slug FROM projects") == [{"id": 2, "slug": "p"}]
    assert rows(index, "SELECT id, project_id FROM agents") == [{"id": 20, "project_id": 2}]
    assert rows(index, "SELECT project_id, sender_id FROM messages") == [{"project_id": 2, "sender_id": 20}]


def test_links_and_reservations_upsert(index: Index) -> None:
    index.write_batch(Batch(projects=[project(1), project(2, "q")], agents=[agent(10, 1, "A"), agent(20, 2, "B")]))
    link = {
        "a_project_id": 1, "a_agent_id": 10, "b_project_id": 2, "b_agent_id": 20, "status": "pending",
        "reason": "", "created_ts": T0, "updated_ts": T0, "expires_ts": None,
    }  # fmt: skip
    gone = {**link, "b_agent_id": 99}  # an endpoint not indexed: no row
    index.write_batch(Batch(links=[link, gone]))
    index.write_batch(Batch(links=[{**link, "status": "approved", "updated_ts": T1}]))
    index.write_batch(Batch(links=[{**link, "status": "blocked"}]))  # older than the row: ignored
    assert rows(index, "SELECT b_agent_id, status FROM agent_links") == [{"b_agent_id": 20, "status": "approved"}]
    hold = {
        "id": 5, "project_id": 1, "agent_id": 10, "path_pattern": "src/**", "exclusive": 1, "reason": "",
        "created_ts": T0, "expires_ts": T1, "released_ts": None,
    }  # fmt: skip
    index.write_batch(Batch(reservations=[hold]))
    index.write_batch(Batch(reservations=[{**hold, "released_ts": T1}]))
    index.write_batch(Batch(reservations=[{**hold, "released_ts": None}]))  # released stays released
    assert rows(index, "SELECT exclusive, released_ts FROM file_reservations") == [{"exclusive": 1, "released_ts": T1}]
    assert index.indexed_values("file_reservations", [5, 6], ("path_pattern",)) == {5: ("src/**",)}
    assert index.project_id("q") == 2 and index.project_id("nope") is None


def test_times_sort_bytewise_and_summaries_get_ids(index: Index) -> None:
    """ISO text orders mail on both backends (PostgreSQL's columns are COLLATE "C")."""
    index.write_batch(Batch(projects=[project(1)], agents=[agent(10, 1, "A")]))
    times = ["2026-01-01T00:00:00.5+00:00", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.25+00:00"]
    index.write_batch(Batch(messages=[message(i + 1, 1, 10, created=t) for i, t in enumerate(times)]))
    assert [r["created_ts"] for r in rows(index, "SELECT created_ts FROM messages ORDER BY created_ts")] == sorted(
        times
    )
    with index.transaction() as conn:
        made = conn.execute(
            "INSERT INTO message_summaries (project_id, summary_text, start_ts, end_ts, created_ts) "
            "VALUES (1, '{}', :t, :t, :t) RETURNING id",
            {"t": T0},
        ).scalar()
    assert made == 1


def test_migrations_are_recorded_once_and_run_again_do_nothing(index_settings: Settings) -> None:
    first, second = Index.from_settings(index_settings), Index.from_settings(index_settings)
    try:
        done: list[list[int]] = []
        threads = [
            threading.Thread(target=lambda i=i: done.append(migrations.apply(i.engine))) for i in (first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # each migration applied once between the two (on SQLite each takes the write lock on its
        # own, so the two runners may share the list; on PostgreSQL one runner applies them all)
        assert sorted(v for applied in done for v in applied) == [m.version for m in migrations.MIGRATIONS]
        versions = [r["version"] for r in rows(first, "SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in migrations.MIGRATIONS]
    finally:
        first.close()
        second.close()


def test_an_index_file_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """A file made by the unversioned schema (without message_summaries.agent_id, as the oldest
    ones) keeps its rows and gets the column and version 1."""
    path = tmp_path / "index.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        SQLITE_SCHEMA.replace(
            "  cost_usd REAL,\n  created_ts TEXT NOT NULL,\n  agent_id INTEGER\n",
            "  cost_usd REAL,\n  created_ts TEXT NOT NULL\n",
        )
    )
    old.execute("INSERT INTO projects VALUES (3, 'p', '/p', ?, NULL)", (T0,))
    old.commit()
    assert "agent_id" not in {r[1] for r in old.execute("PRAGMA table_info(message_summaries)")}
    old.close()
    index = Index(path)
    index.ensure_schema()
    assert rows(index, "SELECT id, slug FROM projects") == [{"id": 3, "slug": "p"}]
    assert "agent_id" in index.columns("message_summaries")
    # version 1 adopts the file; the later migrations apply after it
    assert [r["version"] for r in rows(index, "SELECT version FROM schema_migrations")] == [
        m.version for m in migrations.MIGRATIONS
    ]
    index.close()


def test_the_drain_lock_excludes_another_index_on_the_same_database(index_settings: Settings) -> None:
    """Two Index objects (as two worker processes or hosts would have) take turns on a slug, and
    do not block each other on different slugs."""
    first, second = Index.from_settings(index_settings), Index.from_settings(index_settings)
    order: list[str] = []
    try:
        with first.project_lock("p"):
            waiting = threading.Thread(target=lambda: _hold(second, "p", order))
            waiting.start()
            with second.project_lock("other"):
                order.append("other")
            time.sleep(0.3)
            order.append("first done")
        waiting.join(10)
        assert order == ["other", "first done", "second"]
    finally:
        first.close()
        second.close()


def _hold(index: Index, slug: str, order: list[str]) -> None:
    with index.project_lock(slug):
        order.append("second")


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("mysql://root@127.0.0.1/db", "DATABASE_URL_UNSUPPORTED"),
        ("sqlite://", "DATABASE_URL_UNSUPPORTED"),
        ("sqlite+aiosqlite:///./storage.sqlite3", "DATABASE_URL_UNSUPPORTED"),  # the reference's form
        ("postgresql://u:s3cret@127.0.0.1:1/db", "DATABASE_UNREACHABLE"),
    ],
)
def test_a_database_url_that_cannot_be_used_is_a_coded_error_without_the_password(url: str, code: str) -> None:
    with pytest.raises(BrokerError) as raised:
        Index(url).check()
    assert raised.value.code == code and "DATABASE_URL" in str(raised.value) and "s3cret" not in str(raised.value)


def test_settings_show_the_url_without_the_password(tmp_path: Path) -> None:
    settings = Settings(STORAGE_ROOT=tmp_path, DATABASE_URL="postgresql://bob:s3cret@db.example:5433/mail")
    assert settings.index_url_redacted == "postgresql://bob@db.example:5433/mail"
    assert Settings(STORAGE_ROOT=tmp_path).index_url == f"sqlite:///{tmp_path / 'index.sqlite3'}"
    local = Settings(STORAGE_ROOT=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/elsewhere.sqlite3")
    assert local.index_path == tmp_path / "elsewhere.sqlite3"


def test_the_environment_resource_names_the_backend_without_the_password(tmp_path: Path) -> None:
    from broker.mcp.tooling import environment

    on_pg = Settings(STORAGE_ROOT=tmp_path, DATABASE_URL="postgresql://bob:s3cret@db.example:5433/mail")
    assert environment(on_pg)["database_url"] == "postgresql://bob@db.example:5433/mail"
    assert environment(Settings(STORAGE_ROOT=tmp_path))["database_url"] == f"sqlite:///{tmp_path / 'index.sqlite3'}"


def test_recipients_keep_the_order_they_were_named_in_after_reads(index: Index) -> None:
    """Cold reads and rehydrate list a message's recipients as the send named them (to, cc, bcc in
    order), not by id or name, also after a read or an ack updated some of the rows."""
    named = [7, 3, 9, 5]  # agent ids in the order the send named them
    agents = [agent(aid, 1, f"Agent{aid}") for aid in (2, *named)]
    index.write_batch(Batch(projects=[project(1)], agents=agents, messages=[message(10, 1, 2)]))
    index.write_batch(Batch(recipients=[recipient(10, aid) for aid in named]))
    index.write_batch(Batch(recipients=[recipient(10, 7, read=T1), recipient(10, 9, read=T1, ack=T1)]))
    order = recipient_order(index)
    listed = index.query(f"SELECT r.agent_id FROM message_recipients r WHERE r.message_id = 10 ORDER BY {order}")
    assert [row[0] for row in listed] == named


@pytest.mark.postgresql
@pytest.mark.parametrize("index_backend", ["postgresql"], indirect=True)
def test_a_read_after_the_server_dropped_its_connections_answers(index: Index, index_settings: Settings) -> None:
    """PostgreSQL restarted or an idle timeout ended the pooled connections: the next read runs on
    a fresh connection instead of failing the call (there is no ping before each checkout)."""
    index.write_batch(Batch(projects=[project(1)]))
    assert rows(index, "SELECT slug FROM projects") == [{"slug": "p"}]  # a connection now in the pool
    end_connections(index_settings.database_url)
    assert rows(index, "SELECT slug FROM projects") == [{"slug": "p"}]
