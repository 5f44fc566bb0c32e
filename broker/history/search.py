"""Reading history from the index (SQLite or PostgreSQL): search_messages, summarize_thread,
summarize_recent, fetch_summary.

The index is written behind the hot path by the persistence worker, so these tools see a
message once its batch is persisted (the persistence lag, measured by
``benchmarks/durability.py``), not the moment send_message returns. The viewer is
authenticated against Redis (one script call); the query runs on a worker thread so a slow
query never stalls the event loop.

Search takes FTS5's query syntax on both backends: SQLite runs it as an FTS5 MATCH ranked by
bm25; PostgreSQL runs its translation (broker/history/tsquery.py) against the ``tsvector`` of
``fts_messages`` ranked by ts_rank. A query FTS5 refuses takes the same LIKE fallback on both.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.errors import BrokerError
from broker.history.summaries import Digest, digest_of
from broker.history.tsquery import FtsSyntaxError, to_tsquery_text
from broker.identity import refusals
from broker.identity.names import validate_name
from broker.identity.projects import project_slug
from broker.persistence.index import Index
from broker.store.commands import identity as identity_store
from broker.store.commands import projects as project_store
from broker.store.refusals import Refusal
from broker.store.store import Store

MAX_QUERY_CHARS = 1000
MAX_THREAD_IDS = 50
MAX_THREAD_MESSAGES = 10_000
MAX_RECENT_MESSAGES = 5000
MAX_SQLITE_INT = 2**63 - 1
EMPTY_QUERIES = {"*", "**", "***", ".", "..", "...", "?", "??", "???", "AND", "OR", "NOT"}
HYPHENATED = re.compile(r'("[^"]*")|\b([A-Za-z0-9]+(?:-[A-Za-z0-9]+)+)\b')
LIKE_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
FTS_WORDS = {"AND", "OR", "NOT", "NEAR"}
CACHE_SLACK = timedelta(minutes=5)

VISIBLE = (
    "(m.sender_id = :viewer OR EXISTS (SELECT 1 FROM message_recipients r "
    "WHERE r.message_id = m.id AND r.agent_id = :viewer))"
)
# ts_rank's weights for D, C, B (body), A (subject): both columns count the same, as FTS5's
# bm25() with no weights; normalisation 1 divides by 1 + log(length), as bm25 favours short rows
PG_RANK = "ts_rank(CAST('{0.1, 0.1, 1, 1}' AS float4[]), f.document, to_tsquery('simple', :q), 1)"


class History:
    """History reads for one server: the Redis store (viewers, projects) and the index."""

    def __init__(self, store: Store, index: Index) -> None:
        self.store = store
        self.index = index

    async def _run(self, fn: Any, *args: Any) -> Any:
        def call() -> Any:
            self.index.ensure_schema()  # a no-op once done on this Index
            return fn(*args)

        return await asyncio.to_thread(call)

    async def viewer(self, project_key: str, agent_name: str | None, token: str | None, action: str) -> dict[str, Any]:
        """The authenticated viewing agent's record: ``agent_name`` (with its token when auth
        requires one), else the agent this MCP session last authenticated as."""
        slug = await project_slug(self.store, project_key)
        name = agent_name if agent_name else self.store.bindings.current_agent(slug)
        if not name:
            raise BrokerError(
                "AUTHENTICATION_REQUIRED",
                f"{action} requires an authenticated agent for project '{project_key}'. Provide agent_name "
                "plus registration_token, or authenticate in this session first.",
            )
        name = validate_name(name, "agent_name")
        digest, require = self.store.bindings.args(slug, name, token)
        try:
            found = await identity_store.get_agent(self.store, slug=slug, name=name, credentials=(digest, require))
        except Refusal as refused:
            await refusals.raise_for(self.store, refused.reply, slug, project_key)
            raise
        if digest:
            self.store.bindings.bind(slug, name)
        return found.agent

    async def project_id(self, project_key: str) -> int:
        slug = await project_slug(self.store, project_key)
        found = await project_store.project_id(self.store, slug=slug)
        if found is None:
            raise await refusals.project_not_found(self.store, project_key)
        return found

    # -- search -------------------------------------------------------------------------
    async def search(
        self, project_key: str, query: str, limit: int, agent_name: str | None, token: str | None
    ) -> list[dict[str, Any]]:
        if not isinstance(query, str) or len(query) > MAX_QUERY_CHARS:
            raise BrokerError("INVALID_ARGUMENT", f"query must be text of at most {MAX_QUERY_CHARS} characters.")
        if not 1 <= limit <= 1000:
            raise BrokerError("INVALID_LIMIT", f"limit must be between 1 and 1000, got {limit}.")
        viewer = await self.viewer(project_key, agent_name, token, "search_messages")
        return await self.search_scopes([(int(viewer["project_id"]), int(viewer["id"]))], query, limit)

    async def search_project(self, project_key: str, query: str, limit: int) -> list[dict[str, Any]]:
        """search_messages over every message of the project, for the overseers' web view (which
        is behind the HTTP auth and reads every agent's mail); the same FTS5 syntax and fallback."""
        if not isinstance(query, str) or len(query) > MAX_QUERY_CHARS:
            raise BrokerError("INVALID_ARGUMENT", f"query must be text of at most {MAX_QUERY_CHARS} characters.")
        return await self.search_scopes([(await self.project_id(project_key), None)], query, limit)

    async def search_scopes(
        self, scopes: list[tuple[int, int | None]], query: str, limit: int, with_project: bool = False
    ) -> list[dict[str, Any]]:
        """Search over (project id, viewer id) pairs at once, best match first; items carry
        ``project_id`` when ``with_project`` (the product bus's search: one ranking, the limit
        applied after visibility). A viewer id of None sees every message of its project (the
        web view)."""
        fts = sanitize_fts_query(query)
        if not fts or not scopes:
            return []
        return await self._run(self._search, scopes, fts, query, limit, with_project)

    def _search(
        self, scopes: list[tuple[int, int | None]], fts: str, raw: str, limit: int, with_project: bool
    ) -> list[dict[str, Any]]:
        columns = (
            'm.id, m.subject, m.importance, m.ack_required, m.created_ts, m.thread_id, a.name AS "from"'
            + (", m.project_id" if with_project else "")
            + " FROM messages m LEFT JOIN agents a ON a.id = m.sender_id"
        )
        params: dict[str, Any] = {"q": fts, "limit": limit}
        clauses = []
        for i, (pid, viewer) in enumerate(scopes):
            params[f"pid{i}"] = pid
            if viewer is None:
                clauses.append(f"(m.project_id = :pid{i})")
                continue
            params[f"viewer{i}"] = viewer
            clauses.append(f"(m.project_id = :pid{i} AND {VISIBLE.replace(':viewer', f':viewer{i}')})")
        scope = "(" + " OR ".join(clauses) + ")"
        try:
            if getattr(self.index, "dialect", "sqlite") == "postgresql":
                tsquery = to_tsquery_text(fts)
                if tsquery is None:  # nothing can match (an empty phrase, message_id:...)
                    return []
                rows = self.index.query(
                    f"SELECT {columns} JOIN fts_messages f ON f.message_id = m.id "
                    f"WHERE f.document @@ to_tsquery('simple', :q) AND {scope} "
                    f"ORDER BY {PG_RANK} DESC, m.id ASC LIMIT :limit",
                    {**params, "q": tsquery},
                )
            else:
                rows = self.index.query(
                    f"SELECT {columns} JOIN fts_messages ON fts_messages.rowid = m.id WHERE fts_messages MATCH :q "
                    f"AND {scope} ORDER BY bm25(fts_messages) ASC LIMIT :limit",
                    params,
                )
        except (sqlite3.OperationalError, FtsSyntaxError):
            # Not valid FTS5 syntax even after sanitising: every plain token must appear.
            rows = self._search_like(columns, scope, params, raw)
        return [_search_item(row) for row in rows]

    def _search_like(self, columns: str, scope: str, params: dict[str, Any], raw: str) -> list[Any]:
        tokens = like_tokens(raw)
        if not tokens:
            return []
        # LIKE ignores ASCII case on SQLite; ILIKE is PostgreSQL's case-blind LIKE
        like = "ILIKE" if getattr(self.index, "dialect", "sqlite") == "postgresql" else "LIKE"
        likes, like_params = [], dict(params)
        for i, token in enumerate(tokens):
            escaped = token.replace("!", "!!").replace("%", "!%").replace("_", "!_")
            like_params[f"t{i}"] = f"%{escaped}%"
            likes.append(f"(m.subject {like} :t{i} ESCAPE '!' OR m.body_md {like} :t{i} ESCAPE '!')")
        return self.index.query(
            f"SELECT {columns} WHERE {scope} AND {' AND '.join(likes)} ORDER BY m.created_ts DESC LIMIT :limit",
            like_params,
        )

    # -- threads ------------------------------------------------------------------------
    async def summarize_thread(
        self,
        project_key: str,
        thread_id: str,
        include_examples: bool,
        per_thread_limit: int,
        agent_name: str | None,
        token: str | None,
    ) -> dict[str, Any]:
        ids = [t.strip() for t in (thread_id or "").split(",") if t.strip()]
        if not ids:
            raise BrokerError(
                "INVALID_ARGUMENT", "thread_id is empty. Pass a thread id, or several separated by commas."
            )
        if len(ids) > MAX_THREAD_IDS:
            raise BrokerError("INVALID_ARGUMENT", f"At most {MAX_THREAD_IDS} thread ids per call; pass fewer.")
        if any(len(t) > 128 for t in ids):
            raise BrokerError("INVALID_THREAD_ID", "A thread id is longer than 128 characters; check the value.")
        if not 1 <= per_thread_limit <= 1000:
            raise BrokerError("INVALID_LIMIT", f"per_thread_limit must be between 1 and 1000, got {per_thread_limit}.")
        viewer = await self.viewer(project_key, agent_name, token, "summarize_thread")
        pid, me = int(viewer["project_id"]), int(viewer["id"])
        if len(ids) == 1:
            return await self.one_thread(viewer, ids[0], include_examples)
        threads, overall = [], Digest()
        for tid in ids:
            rows = await self._run(self._thread_rows, pid, me, tid, per_thread_limit)
            digest = digest_of(rows)
            threads.append({"thread_id": tid, "summary": digest.thread_summary()})
            overall.mentions.update(digest.mentions)
            overall.action_items += digest.action_items
            overall.key_points += digest.key_points
        aggregate = {
            "top_mentions": overall.top_mentions(),
            "action_items": overall.action_items[:25],
            "key_points": overall.key_points[:25],
        }
        return {"threads": threads, "aggregate": aggregate}

    async def one_thread(self, viewer: dict[str, Any], thread_id: str, include_examples: bool) -> dict[str, Any]:
        """``{thread_id, summary, examples}`` of one thread as ``viewer`` (an authenticated agent's
        record or agent_dict: its id and project_id) may see it; examples are its first three."""
        pid, me = int(viewer["project_id"]), int(viewer["id"])
        rows = await self._run(self._thread_rows, pid, me, thread_id, MAX_THREAD_MESSAGES)
        result: dict[str, Any] = {"thread_id": thread_id, "summary": digest_of(rows).thread_summary(), "examples": []}
        if include_examples:
            result["examples"] = [
                {"id": r["id"], "subject": r["subject"], "from": r["from"], "created_ts": r["created_ts"]}
                for r in rows[:3]
            ]
        return result

    async def thread_rows(self, pid: int, viewer: int, thread_id: str, limit: int) -> list[Any]:
        """The newest ``limit`` messages of a thread the viewer may see, oldest first."""
        return await self._run(self._thread_rows, pid, viewer, thread_id, limit)

    def _thread_rows(self, pid: int, viewer: int, thread_id: str, limit: int) -> list[Any]:
        # Membership as in the reference: thread_id == T, or the message whose id is T.
        # ASCII digits only (int() rejects "²"), and within SQLite's integers (a 20-digit
        # thread id is valid but is no message's id).
        as_id = int(thread_id) if thread_id.isascii() and thread_id.isdigit() else -1
        if as_id > MAX_SQLITE_INT:
            as_id = -1
        rows = self.index.query(
            'SELECT m.id, m.subject, m.body_md, m.created_ts, a.name AS "from" FROM messages m '
            "LEFT JOIN agents a ON a.id = m.sender_id WHERE m.project_id = :pid "
            f"AND (m.thread_id = :tid OR m.id = :as_id) AND {VISIBLE} ORDER BY m.created_ts DESC, m.id DESC "
            "LIMIT :limit",
            {"pid": pid, "viewer": viewer, "tid": thread_id, "as_id": as_id, "limit": limit},
        )
        return rows[::-1]

    # -- recent activity ----------------------------------------------------------------
    async def recent_viewer(
        self, project_key: str, agent_name: str | None, token: str | None, action: str
    ) -> tuple[int, int | None]:
        """(project id, viewing agent's id) for summarize_recent / fetch_summary. The viewer is
        resolved as for search (agent_name with its token, else this session's agent) and is
        mandatory under AGENT_AUTH=required. Under ``open`` without agent_name the whole
        project is read (the reference's behaviour; anyone may act as any agent there): id None."""
        if agent_name or self.store.bindings.mode == "required":
            viewer = await self.viewer(project_key, agent_name, token, action)
            return int(viewer["project_id"]), int(viewer["id"])
        return await self.project_id(project_key), None

    async def summarize_recent(
        self,
        project_key: str,
        since_hours: float,
        max_messages: int,
        agent_name: str | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        if not 0 < since_hours <= 24 * 366:
            raise BrokerError("INVALID_ARGUMENT", "since_hours must be more than 0 and at most 8784 (a year).")
        if not 1 <= max_messages <= MAX_RECENT_MESSAGES:
            raise BrokerError("INVALID_LIMIT", f"max_messages must be between 1 and {MAX_RECENT_MESSAGES}.")
        pid, viewer = await self.recent_viewer(project_key, agent_name, token, "summarize_recent")
        return await self._run(self._summarize_recent, pid, viewer, since_hours, max_messages)

    def _summarize_recent(self, pid: int, viewer: int | None, since_hours: float, max_messages: int) -> dict[str, Any]:
        end = datetime.now(UTC)
        start = end - timedelta(hours=since_hours)
        start_ts, end_ts = start.isoformat(), end.isoformat()
        # The newest max_messages of the window (the reference takes the oldest ones), of the
        # messages the viewer sent or received (BCC included) when there is a viewer.
        visible = f"AND {VISIBLE} " if viewer is not None else ""
        rows = self.index.query(
            'SELECT m.id, m.thread_id, m.body_md, a.name AS "from" FROM messages m '
            f"LEFT JOIN agents a ON a.id = m.sender_id WHERE m.project_id = :pid AND m.created_ts >= :start {visible}"
            "ORDER BY m.created_ts DESC, m.id DESC LIMIT :limit",
            {"pid": pid, "start": start_ts, "viewer": viewer, "limit": max_messages + 1},
        )
        truncated = len(rows) > max_messages
        rows = rows[:max_messages][::-1]
        empty = {
            "id": None, "cached": False, "summary_text": f"No activity in the last {since_hours:g} hours.",
            "start_ts": start_ts, "end_ts": end_ts, "source_message_count": 0, "source_thread_ids": [],
            "llm_model": None, "cost_usd": None, "created_ts": end_ts,
        }  # fmt: skip
        if not rows:
            return empty
        cached = self._cached_summary(pid, viewer, start, end)
        if cached is not None:
            return {**cached, "cached": True}
        digest = digest_of(rows)
        thread_ids = sorted({r["thread_id"] or f"msg-{r['id']}" for r in rows})
        text: dict[str, Any] = {
            "participants": sorted(digest.participants),
            "key_points": digest.key_points[:20],
            "action_items": digest.action_items[:20],
            "total_messages": digest.total_messages,
            "total_threads": len(thread_ids),
            "open_actions": digest.open_actions,
            "done_actions": digest.done_actions,
        }
        if truncated:
            text["truncated"] = True
            text["truncation_note"] = f"Only the newest {max_messages} messages of the window were summarised."
        stored = {
            "pid": pid, "text": json.dumps(text), "start": start_ts, "end": end_ts, "count": len(rows),
            "threads": json.dumps(thread_ids), "viewer": viewer,
        }  # fmt: skip
        with self.index.transaction() as conn:
            summary_id = conn.execute(
                "INSERT INTO message_summaries (project_id, summary_text, start_ts, end_ts, source_message_count, "
                "source_thread_ids, llm_model, cost_usd, created_ts, agent_id) "
                "VALUES (:pid, :text, :start, :end, :count, :threads, NULL, NULL, :end, :viewer) RETURNING id",
                stored,
            ).fetchone()[0]
        return {
            "id": summary_id, "cached": False, "summary_text": json.dumps(text), "start_ts": start_ts,
            "end_ts": end_ts, "source_message_count": len(rows), "source_thread_ids": thread_ids,
            "llm_model": None, "cost_usd": None, "created_ts": end_ts,
        }  # fmt: skip

    def _cached_summary(self, pid: int, viewer: int | None, start: datetime, end: datetime) -> dict[str, Any] | None:
        """A stored summary made for the same viewer (NULL, project-wide, matches only NULL)
        whose window is within CACHE_SLACK of this one."""
        rows = self.index.query(
            f"SELECT * FROM message_summaries WHERE project_id = :pid AND {_for_viewer(viewer)} "
            "AND start_ts BETWEEN :start_lo AND :start_hi AND end_ts BETWEEN :end_lo AND :end_hi "
            "ORDER BY end_ts DESC LIMIT 1",
            {
                "pid": pid,
                "viewer": viewer,
                "start_lo": (start - CACHE_SLACK).isoformat(),
                "start_hi": (start + CACHE_SLACK).isoformat(),
                "end_lo": (end - CACHE_SLACK).isoformat(),
                "end_hi": (end + CACHE_SLACK).isoformat(),
            },
        )
        return _summary_row(rows[0]) if rows else None

    async def fetch_summary(
        self,
        project_key: str,
        since_hours: float,
        limit: int,
        agent_name: str | None = None,
        token: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored summaries made for the viewer (or, under ``open`` without one, the project-wide
        ones): a summary holds key points of the viewer's own mail, so it is shown only to it."""
        if not 0 < since_hours <= 24 * 366:
            raise BrokerError("INVALID_ARGUMENT", "since_hours must be more than 0 and at most 8784 (a year).")
        if not 1 <= limit <= 1000:
            raise BrokerError("INVALID_LIMIT", f"limit must be between 1 and 1000, got {limit}.")
        pid, viewer = await self.recent_viewer(project_key, agent_name, token, "fetch_summary")
        cutoff = (datetime.now(UTC) - timedelta(hours=since_hours)).isoformat()
        rows = await self._run(
            self.index.query,
            f"SELECT * FROM message_summaries WHERE project_id = :pid AND {_for_viewer(viewer)} "
            "AND end_ts >= :cutoff ORDER BY end_ts DESC, id DESC LIMIT :limit",
            {"pid": pid, "viewer": viewer, "cutoff": cutoff, "limit": limit},
        )
        return [_summary_row(row) for row in rows]


def _for_viewer(viewer: int | None) -> str:
    """Summaries made for this viewer; None (project-wide) matches only project-wide ones."""
    return "agent_id IS NULL" if viewer is None else "agent_id = :viewer"


def _search_item(row: Any) -> dict[str, Any]:
    item = dict(row)
    item["ack_required"] = int(item["ack_required"])  # 0/1 on both backends (a BOOLEAN on PostgreSQL)
    return item


def _summary_row(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "summary_text": row["summary_text"],
        "start_ts": row["start_ts"],
        "end_ts": row["end_ts"],
        "source_message_count": row["source_message_count"],
        "source_thread_ids": json.loads(row["source_thread_ids"]),
        "llm_model": row["llm_model"],
        "cost_usd": row["cost_usd"],
        "created_ts": row["created_ts"],
    }


def sanitize_fts_query(query: str) -> str:
    """The reference's FTS5 sanitising: "" means "no results"."""
    text = " ".join(query.split())
    if not text or text.upper() in EMPTY_QUERIES:
        return ""
    text = text.lstrip("*").strip()
    if text.endswith(" *"):
        text = text[:-2].strip()
    if not text:
        return ""
    if text.startswith('"') and text.endswith('"') and text.count('"') == 2:
        return text  # one quoted phrase: left as it is
    # Quote hyphenated tokens (POL-358) so FTS5 does not read '-' as an operator.
    return HYPHENATED.sub(lambda m: m.group(1) or f'"{m.group(2)}"', text)


def like_tokens(query: str) -> list[str]:
    tokens: list[str] = []
    for token in LIKE_TOKEN.findall(query):
        if len(token) >= 2 and token.upper() not in FTS_WORDS and token not in tokens:
            tokens.append(token)
    return tokens[:5]
