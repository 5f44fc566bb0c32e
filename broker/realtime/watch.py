"""``broker watch`` (arrivals as they come) and ``broker hook check-inbox`` (unread mail not yet
shown, for agent hooks). Both read Redis directly (REDIS_URL, or the embedded server of
STORAGE_ROOT), as the broker does, so they need no token: access to Redis is access to all mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape

from broker.config import get_settings
from broker.errors import BrokerError
from broker.identity.auth import SessionBindings
from broker.realtime import arrivals
from broker.store.commands import projects as project_store
from broker.store.embedded import resolve_redis_url
from broker.store.errors import StoreFailure
from broker.store.store import Store

hook_app = typer.Typer(help="Commands for agent hooks (e.g. Claude Code's UserPromptSubmit).", no_args_is_help=True)

ProjectOption = Annotated[
    str, typer.Option("--project", envvar="AGENT_BROKER_PROJECT", help="Project key (absolute path or slug)")
]
AgentOption = Annotated[str, typer.Option("--agent", envvar="AGENT_BROKER_AGENT", help="Agent name")]


def _store() -> Store:
    settings = get_settings()
    url, _backend = resolve_redis_url(settings.data_redis_url, settings.storage_root)
    # reads only: no persistence queue; the token checks are open, as on a local terminal
    return Store(settings, url, SessionBindings("open", settings.session_binding_ttl_seconds))


def _fail(exc: BrokerError) -> typer.Exit:
    print(f"broker: {exc}", file=sys.stderr)
    return typer.Exit(1)


# -- watch ----------------------------------------------------------------------------------------
def watch(
    project: ProjectOption,
    agent: AgentOption,
    after_id: Annotated[
        str | None, typer.Option(help="Replay from this cursor or message id first ('0' = whole inbox)")
    ] = None,
    bodies: Annotated[bool, typer.Option("--bodies/--no-bodies", help="Print message bodies")] = True,
    count: Annotated[int | None, typer.Option(help="Exit after this many messages")] = None,
) -> None:
    """Print an agent's arrivals as they come (Ctrl-C to stop)."""
    console = Console(highlight=False)
    try:
        asyncio.run(_watch(console, project, agent, after_id, bodies, count))
    except KeyboardInterrupt:
        pass
    except BrokerError as exc:
        raise _fail(exc) from None


async def _watch(
    console: Console, project: str, agent: str, after_id: str | None, bodies: bool, count: int | None
) -> None:
    store = _store()
    try:
        slug, name = await arrivals.authenticate(store, project, agent, None)
        cursor = await arrivals.start_cursor(store, slug, name, after_id)
        console.print(f"[dim]watching mail for {name} in {project} (from cursor {cursor}); Ctrl-C to stop[/dim]")
        shown, backoff = 0, 0.1
        while count is None or shown < count:
            try:
                async with contextlib.aclosing(arrivals.follow(store, slug, name.lower(), cursor, bodies)) as events:
                    async for entry_id, item in events:
                        _print_item(console, item, bodies)
                        cursor, shown, backoff = entry_id, shown + 1, 0.1
                        if count is not None and shown >= count:
                            break
            except StoreFailure as exc:  # resume from the last cursor once Redis answers again
                console.print(f"[yellow]Redis unreachable ({exc}); retrying in {backoff:.1f}s[/yellow]")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
    finally:
        await store.close()


def _print_item(console: Console, item: dict[str, Any], bodies: bool) -> None:
    flags = [item["importance"]] if item["importance"] != "normal" else []
    if item["ack_required"]:
        flags.append("ack required")
    extra = f" [bold red]({', '.join(flags)})[/bold red]" if flags else ""
    thread = f" [dim]thread {escape(item['thread_id'])}[/dim]" if item.get("thread_id") else ""
    console.print(
        f"[dim]{item['created_ts'][:19]}[/dim] [cyan]#{item['id']}[/cyan] from [bold]{escape(item['from'])}[/bold] "
        f"({item['kind']}){extra}: {escape(item['subject'])}{thread}"
    )
    if bodies and item.get("body_md"):
        console.print(Markdown(item["body_md"]))


# -- hook check-inbox -------------------------------------------------------------------------------
@hook_app.command("check-inbox")
def check_inbox(
    project: ProjectOption,
    agent: AgentOption,
    limit: Annotated[int, typer.Option(min=1, max=100, help="Most messages listed")] = 10,
) -> None:
    """Print unread mail this command has not shown before; print nothing when there is none."""
    try:
        text = asyncio.run(_check_inbox(project, agent, limit))
    except BrokerError as exc:
        raise _fail(exc) from None
    if text:
        print(text)


async def _check_inbox(project: str, agent: str, limit: int) -> str:
    store = _store()
    try:
        slug, name = await arrivals.authenticate(store, project, agent, None)
        items, more = await arrivals.unseen_unread(store, slug, name, limit)
        if not items:
            return ""
        human_key = await project_store.human_key(store, slug=slug) or project
    finally:
        await store.close()
    noun = "message" if len(items) == 1 else "messages"
    if more:  # older unseen mail is left out: say so rather than call these all of it
        lines = [f"New mail for {name} in {human_key}: more than {len(items)} unread {noun}; the newest {len(items)}:"]
    else:
        lines = [f"New mail for {name} in {human_key}: {len(items)} unread {noun}."]
    for item in items:
        flags = [item["importance"]] if item["importance"] != "normal" else []
        if item["ack_required"]:
            flags.append("ack required")
        tail = f" [{', '.join(flags)}]" if flags else ""
        lines.append(f"- #{item['id']} from {item['from']}{tail}: {item['subject']}")
    lines.append(
        f'Read them with fetch_inbox(project_key="{human_key}", agent_name="{name}", include_bodies=true), '
        "then mark_message_read or acknowledge_message."
    )
    return "\n".join(lines)
