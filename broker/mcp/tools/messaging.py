"""Tools for mail: send_message, reply_message, fetch_inbox, fetch_topic, mark_message_read,
acknowledge_message."""

from __future__ import annotations

from typing import Any

from fastmcp import FastMCP

from broker.config import Settings
from broker.mail import inbox
from broker.mail import send as mail
from broker.mail.inputs import check_format
from broker.store.store import Store


def register(mcp: FastMCP, store: Store, settings: Settings, backend: str) -> None:
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
        idempotency_key: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Send a Markdown message to all recipients or none, once per idempotency_key (Name@<slug>: other project)."""
        check_format(format)
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
            auto_contact_if_blocked,
            idempotency_key,
            attachment_paths,
            convert_images,
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
        idempotency_key: str | None = None,
        format: str | None = None,
    ) -> dict[str, Any]:
        """Reply in the message's thread, by default to its sender (once per idempotency_key)."""
        check_format(format)
        return await mail.reply_message(
            store, project_key, message_id, sender_name, body_md, to, cc, bcc, subject_prefix, sender_token,
            idempotency_key,
        )  # fmt: skip

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
        """The agent's inbox, newest first. Read-only: marks nothing read."""
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
        """Messages with this topic that the agent sent or received, newest first."""
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
        """Mark a received message read."""
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
        """Acknowledge a received message (also marks it read)."""
        check_format(format)
        return await inbox.mark_message(store, project_key, agent_name, message_id, registration_token, "ack")
