"""The MCP facade: FastMCP tools with the reference's names, arguments and result keys.

Thin by design: each tool validates through its domain module and shapes the result.
``build_server()`` returns a new server each call; all state is in Redis, so servers built
in one process (or in many processes) share it.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions as redis
from fastmcp import FastMCP
from fastmcp.exceptions import ToolError, ValidationError

from broker import identity, inbox, mail
from broker.config import Settings, get_settings
from broker.embedded import resolve_redis_url
from broker.errors import BrokerError
from broker.store import Store

INSTRUCTIONS = (
    "Coordination broker for coding agents sharing a repository: register an identity "
    "(register_agent), exchange threaded mail (send_message, reply_message, fetch_inbox), "
    "and acknowledge requests. Project keys are absolute repository paths."
)


class BrokerMCP(FastMCP):
    """FastMCP whose every failure reaches the client as ``CODE: what happened. remedy``:
    argument type errors become INVALID_ARGUMENT, and unexpected exceptions (which FastMCP
    wraps as "Error calling tool ...") get a code too. An override rather than a middleware,
    because the middleware chain costs every call."""

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        try:
            return await super().call_tool(name, arguments, **kwargs)
        except ValidationError as exc:
            cause = exc.__cause__
            detail = str(exc)
            if cause is not None and hasattr(cause, "errors"):
                detail = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in cause.errors())
            raise BrokerError(
                "INVALID_ARGUMENT",
                f"{detail}. Check the argument names and types in the tool's schema.",
            ) from exc
        except ToolError as exc:
            if isinstance(exc, BrokerError) or exc.__cause__ is None:
                raise
            raise unexpected_error(exc.__cause__) from exc


def unexpected_error(exc: BaseException) -> BrokerError:
    if isinstance(exc, UnicodeError):
        return BrokerError("INVALID_ARGUMENT", f"Text is not valid Unicode ({exc.reason}); send UTF-8 text.")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return BrokerError(
            "CONNECTION_ERROR", f"Redis is unreachable ({exc}). Check REDIS_URL and that the Redis server runs."
        )
    if isinstance(exc, redis.RedisError):
        return BrokerError("INTERNAL_ERROR", f"Redis refused an operation ({exc}). Please report this.")
    return BrokerError("UNHANDLED_EXCEPTION", f"Unexpected error ({type(exc).__name__}): {exc}. Please report this.")


JSON_FORMATS = {"", "json", "auto", "default", "none", "null", "application/json", "text/json"}


def check_format(value: str | None) -> None:
    """The reference's ``format`` argument: JSON is the only output we produce."""
    if value is not None and value.strip().lower() not in JSON_FORMATS:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"format '{value}' is not supported: this broker returns JSON only; pass format='json' or omit it.",
        )


def build_server(settings: Settings | None = None, *, agent_auth: str | None = None) -> FastMCP:
    settings = settings or get_settings()
    redis_url, backend = resolve_redis_url(settings.redis_url, settings.storage_root)
    store = Store(settings, redis_url, agent_auth)
    mcp = BrokerMCP("agent-broker", instructions=INSTRUCTIONS)
    mcp.store = store  # type: ignore[attr-defined]  # for the HTTP layer and tests
    mcp.backend_description = backend  # type: ignore[attr-defined]

    @mcp.tool
    async def health_check(format: str | None = None) -> dict[str, Any]:
        """Broker status and configuration echo (round-trips to Redis)."""
        check_format(format)
        await store.redis.ping()
        return {
            "status": "ok",
            "environment": settings.environment,
            "http_host": settings.http_host,
            "http_port": settings.http_port,
            "database_url": f"sqlite:///{settings.index_path}",
            "redis": backend,
            "agent_auth": store.bindings.mode,
        }

    @mcp.tool
    async def ensure_project(
        human_key: str, identity_mode: str | None = None, format: str | None = None
    ) -> dict[str, Any]:
        """Create the project for a repository (idempotent). human_key: its absolute path."""
        check_format(format)
        return await identity.ensure_project(store, human_key)

    @mcp.tool
    async def register_agent(
        project_key: str,
        program: str,
        model: str,
        name: str | None = None,
        task_description: str = "",
        attachments_policy: str = "auto",
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Register (or update) an agent identity; returns its profile and registration_token.
        Omit name to get a generated adjective+noun name such as 'BlueLake'."""
        check_format(format)
        return await identity.register_agent(
            store, project_key, program, model, name, task_description, attachments_policy, registration_token
        )

    @mcp.tool
    async def create_agent_identity(
        project_key: str,
        program: str,
        model: str,
        name_hint: str | None = None,
        task_description: str = "",
        attachments_policy: str = "auto",
        format: str | None = None,
    ) -> dict[str, Any]:
        """Always create a new agent identity (name_hint used when valid and free)."""
        check_format(format)
        return await identity.create_agent_identity(
            store, project_key, program, model, name_hint, task_description, attachments_policy
        )

    @mcp.tool
    async def whois(
        project_key: str,
        agent_name: str,
        registration_token: str | None = None,
        include_recent_commits: bool = True,
        commit_limit: int = 5,
        format: str | None = None,
    ) -> dict[str, Any]:
        """An agent's profile. recent_commits lists archive commits (empty until the archive exists)."""
        check_format(format)
        agent = await identity.whois(store, project_key, agent_name, registration_token)
        if include_recent_commits:
            agent["recent_commits"] = []
        return agent

    @mcp.tool
    async def send_message(
        project_key: str,
        sender_name: str,
        to: list[str],
        subject: str,
        body_md: str,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        attachment_paths: list[str] | None = None,
        convert_images: bool | None = None,
        importance: str = "normal",
        ack_required: bool = False,
        thread_id: str | None = None,
        broadcast: bool = False,
        topic: str | None = None,
        auto_contact_if_blocked: bool | None = None,
        sender_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Send a Markdown message to agents of the project; delivered to all recipients or none."""
        check_format(format)
        if attachment_paths:
            raise BrokerError(
                "UNSUPPORTED",
                "attachment_paths is not supported yet; reference files by their repository path in body_md instead.",
            )
        return await mail.send_message(
            store,
            project_key,
            sender_name,
            to,
            subject,
            body_md,
            cc,
            bcc,
            importance,
            ack_required,
            thread_id,
            broadcast,
            topic,
            sender_token,
        )

    @mcp.tool
    async def reply_message(
        project_key: str,
        message_id: int,
        sender_name: str,
        body_md: str,
        to: list[str] | None = None,
        cc: list[str] | None = None,
        bcc: list[str] | None = None,
        subject_prefix: str = "Re:",
        sender_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Reply in the message's thread; by default to its sender."""
        check_format(format)
        return await mail.reply_message(
            store, project_key, message_id, sender_name, body_md, to, cc, bcc, subject_prefix, sender_token
        )

    @mcp.tool
    async def fetch_inbox(
        project_key: str,
        agent_name: str,
        limit: int = 20,
        urgent_only: bool = False,
        include_bodies: bool = False,
        since_ts: str | None = None,
        topic: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> list[dict[str, Any]]:
        """The agent's inbox, newest first (read-only: it does not mark anything read)."""
        check_format(format)
        return await inbox.fetch_inbox(
            store, project_key, agent_name, limit, urgent_only, include_bodies, since_ts, topic, registration_token
        )

    @mcp.tool
    async def fetch_topic(
        project_key: str,
        topic_name: str,
        limit: int = 50,
        include_bodies: bool = True,
        since_ts: str | None = None,
        agent_name: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> list[dict[str, Any]]:
        """Messages with a topic that the viewing agent sent or received, newest first."""
        check_format(format)
        return await inbox.fetch_topic(
            store, project_key, topic_name, limit, include_bodies, since_ts, agent_name, registration_token
        )

    @mcp.tool
    async def mark_message_read(
        project_key: str,
        agent_name: str,
        message_id: int,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Mark a received message read (the first read time is kept)."""
        check_format(format)
        return await inbox.mark_message(store, project_key, agent_name, message_id, registration_token, "read")

    @mcp.tool
    async def acknowledge_message(
        project_key: str,
        agent_name: str,
        message_id: int,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Acknowledge a received message (also marks it read; first times are kept)."""
        check_format(format)
        return await inbox.mark_message(store, project_key, agent_name, message_id, registration_token, "ack")

    return mcp
