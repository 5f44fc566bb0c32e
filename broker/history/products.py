"""The product bus's cross-project reads: search_messages_product, fetch_inbox_product,
summarize_thread_product. Each runs the single-project read (History's search and thread rows,
broker/mail/inbox.py's fetch_inbox) over the projects linked to a product and merges the results.

Authorization is per (project, agent): in each linked project the agent (``agent_name``, else
the agent this MCP session authenticated as there) is checked with the token as the project's
own tools check it, and only the projects where that passes are read. At least one must pass;
a linked project where the agent is unknown, or its token is another project's, is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.errors import BrokerError
from broker.history.search import MAX_QUERY_CHARS, MAX_THREAD_MESSAGES, History
from broker.history.summaries import digest_of
from broker.identity import products, refusals
from broker.identity.names import validate_name
from broker.mail import inbox
from broker.mail.inputs import check_limit, since_micros
from broker.store.commands import identity as identity_store
from broker.store.commands.projects import ProjectRecord
from broker.store.refusals import Refusal
from broker.store.store import Store


@dataclass(frozen=True, slots=True)
class Authorized:
    """A linked project and the agent authenticated in it (its record: id, name, project_id)."""

    project: ProjectRecord
    agent: dict[str, Any]


class ProductReads:
    def __init__(self, store: Store, history: History) -> None:
        self.store = store
        self.history = history

    async def authorized(
        self, product_key: str, agent_name: str | None, token: str | None, action: str
    ) -> list[Authorized]:
        """The linked projects the agent is authenticated in, in creation order; raises when none."""
        if agent_name is not None and agent_name.strip():
            agent_name = validate_name(agent_name, "agent_name")
        product = await products.product_of(self.store, product_key)
        projects = await products.linked_projects(self.store, product)
        found: list[Authorized] = []
        failure: list[str] | None = None
        for project in projects:
            name = agent_name or self.store.bindings.current_agent(project.slug)
            if not name:
                continue
            digest, require = self.store.bindings.args(project.slug, name, token)
            try:
                record = await identity_store.get_agent(
                    self.store, slug=project.slug, name=name, credentials=(digest, require)
                )
            except Refusal as refused:
                if refused.code in ("BAD_TOKEN", "AUTH_REQUIRED") and failure is None:
                    failure = refused.reply  # the reason to give if no project admits the agent
                continue
            if digest:
                self.store.bindings.bind(project.slug, name)
            found.append(Authorized(project, record.agent))
        if found:
            return found
        if failure is not None:
            await refusals.raise_for(self.store, failure, "", product_key)
        linked = ", ".join(f"'{p.human_key}'" for p in projects) or "none yet (use products_link)"
        who = f"Agent '{agent_name}' is not registered" if agent_name else "No agent is authenticated in this session"
        raise BrokerError(
            "NOT_FOUND" if agent_name else "AUTHENTICATION_REQUIRED",
            f"{action}: {who} in any project linked to product '{product.name}' (linked: {linked}). "
            "Pass the agent_name (and registration_token) of an agent registered in one of them.",
        )

    async def search(
        self, product_key: str, query: str, limit: int, agent_name: str | None, token: str | None
    ) -> list[dict[str, Any]]:
        if not isinstance(query, str) or len(query) > MAX_QUERY_CHARS:
            raise BrokerError("INVALID_ARGUMENT", f"query must be text of at most {MAX_QUERY_CHARS} characters.")
        if not 1 <= limit <= 1000:
            raise BrokerError("INVALID_LIMIT", f"limit must be between 1 and 1000, got {limit}.")
        found = await self.authorized(product_key, agent_name, token, "search_messages_product")
        scopes = [(a.project.id, int(a.agent["id"])) for a in found]
        return await self.history.search_scopes(scopes, query, limit, with_project=True)

    async def fetch_inbox(
        self,
        product_key: str,
        agent_name: str,
        limit: int,
        urgent_only: bool,
        include_bodies: bool,
        since_ts: str | None,
        token: str | None,
    ) -> list[dict[str, Any]]:
        validate_name(agent_name, "agent_name")
        check_limit(limit)
        since_micros(since_ts)  # a bad since_ts is refused before any project is read
        found = await self.authorized(product_key, agent_name, token, "fetch_inbox_product")
        merged: list[dict[str, Any]] = []
        for a in found:
            merged += await inbox.fetch_inbox(
                self.store, a.project.slug, a.agent["name"], limit, urgent_only, include_bodies, since_ts, None, token
            )
        merged.sort(key=lambda item: (item["created_ts"], item["id"]), reverse=True)
        return merged[:limit]

    async def summarize_thread(
        self,
        product_key: str,
        thread_id: str,
        include_examples: bool,
        per_thread_limit: int | None,
        agent_name: str | None,
        token: str | None,
    ) -> dict[str, Any]:
        tid = thread_id.strip() if isinstance(thread_id, str) else ""
        if not tid or len(tid) > 128 or "," in tid:
            raise BrokerError(
                "INVALID_THREAD_ID",
                "thread_id must be one thread id of 1 to 128 characters (summarize_thread takes a comma-separated "
                "list within one project).",
            )
        if per_thread_limit is not None and not 1 <= per_thread_limit <= 1000:
            raise BrokerError("INVALID_LIMIT", f"per_thread_limit must be between 1 and 1000, got {per_thread_limit}.")
        found = await self.authorized(product_key, agent_name, token, "summarize_thread_product")
        limit = per_thread_limit or MAX_THREAD_MESSAGES
        rows: list[Any] = []
        for a in found:
            rows += await self.history.thread_rows(a.project.id, int(a.agent["id"]), tid, limit)
        rows.sort(key=lambda row: (row["created_ts"], row["id"]))
        rows = rows[-limit:]
        result: dict[str, Any] = {"thread_id": tid, "summary": digest_of(rows).thread_summary(), "examples": []}
        if include_examples:
            result["examples"] = [
                {"id": r["id"], "subject": r["subject"], "from": r["from"], "created_ts": r["created_ts"]}
                for r in rows[:3]
            ]
        return result
