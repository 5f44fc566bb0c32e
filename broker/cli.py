"""The ``broker`` command."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from broker.config import get_settings, is_loopback

app = typer.Typer(help="Redis-backed realtime coordination broker for AI coding agents.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Settings come from the environment (REDIS_URL, STORAGE_ROOT, HTTP_*, AGENT_AUTH)."""


class Transport(StrEnum):
    http = "http"
    stdio = "stdio"


def _say(message: str) -> None:
    # stderr: on stdio transport, stdout carries the MCP protocol
    print(f"broker: {message}", file=sys.stderr, flush=True)


@app.command()
def serve(
    transport: Annotated[Transport, typer.Option(help="http (streamable HTTP) or stdio")] = Transport.http,
    host: Annotated[str | None, typer.Option(help="HTTP bind address (default HTTP_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default HTTP_PORT)")] = None,
) -> None:
    """Run the broker."""
    settings = get_settings()
    if transport is Transport.stdio:
        from broker.server import build_server

        mcp = build_server(settings)
        _say(f"storage: {mcp.backend_description}")  # type: ignore[attr-defined]
        _start_embedded_worker(mcp)
        _say(f"agent auth: {mcp.store.bindings.mode}; serving MCP on stdio")  # type: ignore[attr-defined]
        mcp.run(transport="stdio", show_banner=False)
        return

    import uvicorn

    from broker.http import build_http_app

    host = host or settings.http_host
    port = port or settings.http_port
    if not is_loopback(host) and not settings.http_bearer_token:
        _say(f"warning: listening on {host} without HTTP_BEARER_TOKEN; agent tokens are required")
    asgi, mcp = build_http_app(settings, host)
    _say(f"storage: {mcp.backend_description}")  # type: ignore[attr-defined]
    _start_embedded_worker(mcp)
    _say(f"agent auth: {mcp.store.bindings.mode}")  # type: ignore[attr-defined]
    _say(f"serving MCP at http://{host}:{port}{settings.http_path} (health: /health/liveness, /health/readiness)")
    uvicorn.run(asgi, host=host, port=port, log_level="warning")


def _start_embedded_worker(mcp: object) -> None:
    """No REDIS_URL: this process also persists (DESIGN decision 9), on a thread."""
    settings = get_settings()
    if settings.redis_url:
        return
    from workers.runner import PersistenceWorker

    PersistenceWorker(settings, mcp.store.redis_url).start_thread()  # type: ignore[attr-defined]
    _say(f"persistence worker: in-process (archive {settings.archive_path}, index {settings.index_path})")


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="exit once the queue is empty")] = False,
) -> None:
    """Run the persistence worker: drains pending changes into the Git archive and SQLite index."""
    import logging

    from broker.embedded import resolve_redis_url
    from workers.runner import PersistenceWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    url, backend = resolve_redis_url(settings.redis_url, settings.storage_root)
    if url.startswith("memory://"):
        _say("no Redis to share: set REDIS_URL, or install redis-server for the embedded default")
        raise typer.Exit(2)
    _say(f"storage: {backend}; archive {settings.archive_path}; index {settings.index_path}")
    PersistenceWorker(settings, url).run(burst=burst)


@app.command()
def rehydrate(
    force: Annotated[bool, typer.Option(help="also overwrite projects that still exist in Redis")] = False,
) -> None:
    """Rebuild Redis (projects, agents, messages, inboxes, read/ack state, threads) from the index."""
    import asyncio

    from broker.embedded import resolve_redis_url
    from broker.rehydrate import rehydrate_all

    settings = get_settings()
    url, backend = resolve_redis_url(settings.redis_url, settings.storage_root)
    _say(f"storage: {backend}; index {settings.index_path}")
    report = asyncio.run(rehydrate_all(settings, url, force=force))
    for line in report.lines():
        _say(line)


@app.command("redis-stop")
def redis_stop() -> None:
    """Stop the embedded redis-server that brokers share when REDIS_URL is unset."""
    from broker.embedded import stop_shared_redis_server

    data_dir = get_settings().storage_root / "redis"
    url = stop_shared_redis_server(data_dir)
    where = url.split("@")[-1] if url else ""
    _say(f"stopped the embedded redis-server at {where}" if url else f"no embedded redis-server runs for {data_dir}")


guard_app = typer.Typer(help="The git pre-commit guard for exclusive file reservations.", no_args_is_help=True)
app.add_typer(guard_app, name="guard")


@guard_app.command("install")
def guard_install(
    project: Annotated[str, typer.Option(help="project key (the repository's absolute path)")],
    repo: Annotated[str, typer.Option(help="git working tree to guard (default: the project path)")] = "",
) -> None:
    """Install the pre-commit hook (an existing hook is kept and chained).

    No agent token: this runs as the local user, who can write the hook with their own rights
    anyway, so a token would prove nothing the operating system does not. The hook still holds
    no secret, and core.hooksPath must point inside the repository."""
    import os

    from broker import guard
    from broker.errors import BrokerError

    try:
        path = os.path.abspath(guard.check_repo_path(repo or project, relative_ok=True))
        hook = guard.install(get_settings(), project, path)["hook"]
    except BrokerError as exc:
        _say(str(exc))
        raise typer.Exit(1) from exc
    _say(f"installed {hook}")


@guard_app.command("uninstall")
def guard_uninstall(repo: Annotated[str, typer.Option(help="git working tree")] = ".") -> None:
    """Remove the broker's hook and restore the one it chained."""
    import os

    from broker import guard
    from broker.errors import BrokerError

    try:
        removed = guard.uninstall_sync(os.path.abspath(guard.check_repo_path(repo, relative_ok=True)))["removed"]
    except BrokerError as exc:
        _say(str(exc))
        raise typer.Exit(1) from exc
    _say("removed the guard" if removed else "no broker guard installed there")


@guard_app.command("check")
def guard_check(
    project: Annotated[str, typer.Option(help="project key the reservations belong to")],
    repo: Annotated[str, typer.Option(help="git working tree whose staged paths to check")] = ".",
) -> None:
    """Exit 1 if staged paths match another agent's exclusive reservation (what the hook runs)."""
    import os
    from pathlib import Path

    from broker import guard

    raise typer.Exit(guard.check(project, Path(repo), dict(os.environ)))


def _add_realtime_commands() -> None:
    from broker.watch import hook_app, watch

    app.command()(watch)
    app.add_typer(hook_app, name="hook")


_add_realtime_commands()

if __name__ == "__main__":
    app()
