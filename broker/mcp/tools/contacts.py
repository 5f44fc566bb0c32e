"""Tools for contacts: request_contact, respond_contact, list_contacts, set_contact_policy, and the
macro_contact_handshake workflow macro."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.macros import handshake
from broker.mail import contacts
from broker.mail.inputs import check_format
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
    @mcp.tool
    async def request_contact(
        project_key: str,
        from_agent: str,
        to_agent: str,
        to_project: str | None = None,
        reason: str = "",
        ttl_seconds: int = contacts.REQUEST_TTL_SECONDS,
        registration_token: str | None = None,
        register_if_missing: bool = True,
        program: str | None = None,
        model: str | None = None,
        task_description: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Ask to_agent (of this project or to_project) for permission to write to it: a pending link and an intro
        mail."""
        check_format(format)
        return await contacts.request_contact(
            store, project_key, from_agent, to_agent, to_project, reason, ttl_seconds, registration_token
        )

    @mcp.tool
    async def respond_contact(
        project_key: str,
        to_agent: str,
        from_agent: str,
        accept: bool,
        ttl_seconds: int = contacts.APPROVAL_TTL_SECONDS,
        from_project: str | None = None,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Approve (accept=True) or refuse from_agent's request to write to to_agent; approving delivers the held mail."""
        check_format(format)
        return await contacts.respond_contact(
            store, project_key, to_agent, from_agent, accept, ttl_seconds, from_project, registration_token
        )

    @mcp.tool
    async def list_contacts(
        project_key: str, agent_name: str, registration_token: str | None = None, format: str | None = None
    ) -> list[dict[str, Any]]:
        """The agent's outbound contact links, most recently updated first."""
        check_format(format)
        return await contacts.list_contacts(store, project_key, agent_name, registration_token)

    @mcp.tool
    async def set_contact_policy(
        project_key: str,
        agent_name: str,
        policy: str,
        registration_token: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Who may write to the agent: open, auto (default), contacts_only or block_all."""
        check_format(format)
        return await contacts.set_contact_policy(store, project_key, agent_name, policy, registration_token)

    @mcp.tool
    async def macro_contact_handshake(
        project_key: str,
        requester: str | None = None,
        target: str | None = None,
        reason: str = "",
        ttl_seconds: int = contacts.REQUEST_TTL_SECONDS,
        auto_accept: bool = False,
        welcome_subject: str | None = None,
        welcome_body: str | None = None,
        to_project: str | None = None,
        requester_registration_token: str | None = None,
        target_registration_token: str | None = None,
        agent_name: str | None = None,
        to_agent: str | None = None,
        register_if_missing: bool = True,
        program: str | None = None,
        model: str | None = None,
        task_description: str | None = None,
        thread_id: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Request contact from requester (alias agent_name) to target (alias to_agent); auto_accept also approves it;
        welcome_subject/welcome_body send a first message."""
        check_format(format)
        return await handshake.contact_handshake(
            store,
            project_key,
            requester or agent_name,
            target or to_agent,
            reason,
            ttl_seconds,
            auto_accept,
            welcome_subject,
            welcome_body,
            to_project,
            requester_registration_token,
            target_registration_token,
            thread_id,
            handshake.MissingTarget(register_if_missing, program, model, task_description),
        )
