"""The ``broker`` command."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from broker.config import Settings, get_settings, is_loopback

app = typer.Typer(help="Redis-backed realtime coordination broker for AI coding agents.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        from broker import __version__

        print(f"agent-broker {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
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
    port: Annotated[int | None, typer.Option(help="HTTP port (default HTTP_PORT; 0: any free port)")] = None,
) -> None:
    """Run the broker (and, unless PERSISTENCE_WORKER=external, its persistence worker)."""
    from broker.server import build_server

    settings = _persistence_settings(get_settings())
    _check_index(settings)
    if transport is Transport.stdio:
        mcp = build_server(settings)
        _say(f"storage: {mcp.backend_description}")  # type: ignore[attr-defined]
        _start_persistence(mcp, settings)
        _say(f"agent auth: {mcp.store.bindings.mode}; serving MCP on stdio")  # type: ignore[attr-defined]
        mcp.run(transport="stdio", show_banner=False)
        return

    import uvicorn

    from broker.server import build_http_app

    host = host or settings.http_host
    sock = _bind(host, settings.http_port if port is None else port)  # before anything is announced
    port = sock.getsockname()[1]
    # health_check reports what is bound, not HTTP_HOST / HTTP_PORT
    settings = settings.model_copy(update={"http_host": host, "http_port": port})
    if not is_loopback(host) and not settings.http_bearer_token:
        _say(f"warning: listening on {host} without HTTP_BEARER_TOKEN; agent tokens are required")
    asgi, mcp = build_http_app(settings, host)
    _say(f"storage: {mcp.backend_description}")  # type: ignore[attr-defined]
    _start_persistence(mcp, settings)
    _say(f"agent auth: {mcp.store.bindings.mode}")  # type: ignore[attr-defined]
    if mcp.store.bindings.mode == "required":  # type: ignore[attr-defined]
        _say("hard deletes, purges and archiving need the operator token: run `broker admin-token` here")
    shown = f"[{host}]" if ":" in host else host
    _say(f"serving MCP at http://{shown}:{port}{settings.http_path} (health: /health/liveness, /health/readiness)")
    uvicorn.Server(uvicorn.Config(asgi, log_level="warning")).run(sockets=[sock])


def _check_index(settings: Settings) -> None:
    """Reach the index and bring its schema up to date, or exit 1 naming DATABASE_URL: a database
    that is down or a scheme we do not support stops the start, never a silent SQLite fallback."""
    from broker.errors import BrokerError
    from broker.persistence.index import Index

    try:
        index = Index.from_settings(settings)
        try:
            index.check()
        finally:
            index.close()
    except BrokerError as exc:
        _say(str(exc))
        raise typer.Exit(1) from None
    _say(f"index: {index.dialect} at {index.display_url}")


def _bind(host: str, port: int) -> socket.socket:
    """Listen on host:port, or exit 1 saying why (a busy port, an address not on this machine)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not for a port in use: only TIME_WAIT
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        _say(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Stop what uses it, or pick --host/--port")
        raise typer.Exit(1) from exc
    return sock


def _persistence_settings(settings: Settings) -> Settings:
    """PERSISTENCE_WORKER as it can be honoured: in-process fakeredis is visible to no other
    process, so a `broker worker` could never drain it."""
    from broker.store.embedded import resolve_redis_url

    url, _ = resolve_redis_url(settings.data_redis_url, settings.storage_root)
    if settings.persistence_worker == "external" and url.startswith("memory://"):
        _say(
            "warning: PERSISTENCE_WORKER=external, but no other process can reach in-process fakeredis: persisting here"
        )
        return settings.model_copy(update={"persistence_worker": "inprocess"})
    return settings


def _start_persistence(mcp: object, settings: Settings) -> None:
    """Run the persistence worker on a thread of this process (PERSISTENCE_WORKER=inprocess, the
    default), or check that a separate `broker worker` is alive (external); say which either way."""
    url = mcp.store.redis_url  # type: ignore[attr-defined]
    state = _state_now(mcp, settings)
    if settings.persistence_worker == "inprocess":
        from workers.runner import PersistenceWorker

        worker = PersistenceWorker(settings, url)
        worker.start_thread()
        _stop_on_exit(worker.stop)
        _say(f"persistence worker: in-process (archive {settings.archive_path}, index {settings.index_url_redacted})")
    else:
        _say("persistence worker: external (PERSISTENCE_WORKER=external; `broker worker` processes persist)")
    if state is not None:
        from broker.persistence.state import summary_line

        # the in-process worker registers a moment later: its count would read 0
        _say(f"persistence: {summary_line(state, workers=settings.persistence_worker == 'external')}")
        if settings.persistence_worker == "external" and not state["workers_alive"]:
            _say(
                "warning: no `broker worker` is alive for this Redis and REDIS_KEY_PREFIX: nothing reaches the Git "
                "archive or the SQLite index (search_messages finds nothing) until one runs"
            )


def _state_now(mcp: object, settings: Settings) -> dict | None:
    """The persistence state at start-up (None, said, if Redis does not answer within 5 s)."""
    import asyncio

    from broker.persistence.state import persistence_state
    from broker.store.store import Store

    async def read() -> dict:
        # a store of its own: the server's is bound to the loop it will serve in, not this one
        store = Store(settings, mcp.store.redis_url, mcp.store.bindings)  # type: ignore[attr-defined]
        try:
            return await asyncio.wait_for(persistence_state(store, settings), 5)
        finally:
            await store.close()

    try:
        return asyncio.run(read())
    except Exception as exc:  # the server still starts; readiness reports Redis
        _say(f"persistence: state unknown ({type(exc).__name__}: {exc})")
        return None


def _stop_on_exit(stop: Callable[[], None]) -> None:
    """Run ``stop`` once when the process ends: normal exit, Ctrl-C, or SIGTERM/SIGHUP (after
    which the signal's default action still ends the process, as without this)."""
    import atexit
    import os
    import signal

    done = threading.Event()

    def once() -> None:
        if not done.is_set():
            done.set()
            stop()

    def on_signal(signum: int, frame: object) -> None:
        once()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    atexit.register(once)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="exit once the queue is empty")] = False,
) -> None:
    """Run the persistence worker: drains pending changes into the Git archive and SQLite index."""
    import logging

    from broker.store.embedded import resolve_redis_url
    from workers.runner import PersistenceWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    _check_index(settings)
    url, backend = resolve_redis_url(settings.data_redis_url, settings.storage_root)
    if url.startswith("memory://"):
        _say("no Redis to share: set REDIS_URL, or install redis-server for the embedded default")
        raise typer.Exit(2)
    _say(f"storage: {backend}; archive {settings.archive_path}; index {settings.index_url_redacted}")
    runner = PersistenceWorker(settings, url)
    if burst:
        runner.run(burst=True)
    else:
        runner.run_forever()  # rides out Redis outages: reconnects with back-off


@app.command()
def rehydrate(
    force: Annotated[bool, typer.Option(help="also overwrite projects that still exist in Redis")] = False,
) -> None:
    """Rebuild Redis (projects, agents, messages, inboxes, read/ack state, threads) from the index."""
    import asyncio

    from broker.lifecycle.rehydrate import rehydrate_all
    from broker.store.embedded import resolve_redis_url

    settings = get_settings()
    url, backend = resolve_redis_url(settings.data_redis_url, settings.storage_root)
    _say(f"storage: {backend}; index {settings.index_url_redacted}")
    report = asyncio.run(rehydrate_all(settings, url, force=force))
    for line in report.lines():
        _say(line)


@app.command("import-agent-mail")
def import_agent_mail(
    database: Annotated[str, typer.Option(help="the reference's SQLite database (storage.sqlite3)")],
    archive: Annotated[str, typer.Option(help="the reference's STORAGE_ROOT (its Git archive)")],
    dry_run: Annotated[bool, typer.Option(help="report what would be imported; write nothing")] = False,
) -> None:
    """Import an MCP Agent Mail mailbox (docs/migration.md); run it again to finish or repeat one."""
    from broker.migration.cli import import_command

    raise typer.Exit(import_command(get_settings(), database, archive, dry_run))


index_app = typer.Typer(
    help="The index (SQLite or PostgreSQL): copy an SQLite index into PostgreSQL (docs/index-copy.md).",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")


@index_app.command("copy")
def index_copy(
    to: Annotated[str, typer.Option("--to", help="the PostgreSQL database to copy into (postgresql://...)")],
    source: Annotated[
        str | None, typer.Option("--from", help="the SQLite index to copy (default: the configured one)")
    ] = None,
    batch: Annotated[int, typer.Option(help="rows per batch (one transaction each)", min=1, max=50_000)] = 1000,
) -> None:
    """Copy an SQLite index into PostgreSQL: resumable, idempotent, counts per table at the end."""
    from broker.persistence.index_copy import copy_command

    raise typer.Exit(copy_command(get_settings(), to, source, batch))


@index_app.command("backfill-commits")
def index_backfill_commits() -> None:
    """Store each message's archive commit in the index for mail indexed before the index kept it
    (run where the archive is), so brokers without the archive show its commit fields."""
    from broker.persistence.commit_rows import backfill
    from broker.persistence.index import Index

    settings = get_settings()
    if not (settings.archive_path / "HEAD").exists():
        _say(f"no archive at {settings.archive_path}: run this where the worker's archive is (ARCHIVE_ROOT)")
        raise typer.Exit(2)
    index = Index.from_settings(settings)
    try:
        written = backfill(index, settings.archive_path)
    finally:
        index.close()
    _say(f"index {index.display_url}: {written} message commits stored")


@app.command("redis-stop")
def redis_stop() -> None:
    """Stop the embedded redis-server that brokers share when REDIS_URL is unset."""
    from broker.store.embedded import stop_shared_redis_server

    data_dir = get_settings().storage_root / "redis"
    url = stop_shared_redis_server(data_dir)
    where = url.split("@")[-1] if url else ""
    _say(f"stopped the embedded redis-server at {where}" if url else f"no embedded redis-server runs for {data_dir}")


@app.command("admin-token")
def admin_token(
    rotate: Annotated[bool, typer.Option(help="replace the token file's token with a new one")] = False,
) -> None:
    """Print the operator token (BROKER_ADMIN_TOKEN, else <STORAGE_ROOT>/admin-token, created 0600
    if missing): the credential hard deletes, purges and archiving need under AGENT_AUTH=required."""
    from broker.identity import operator

    settings = get_settings()
    if rotate:
        if settings.broker_admin_token:
            _say("BROKER_ADMIN_TOKEN is set, so it is the operator token; change it in the environment instead")
            raise typer.Exit(1)
        token = operator.rotate(settings)
        _say(f"new operator token written to {operator.token_path(settings)}")
    else:
        token = operator.operator_token(settings)
    print(token)  # stdout: the token only, for $(broker admin-token)


dead_app = typer.Typer(help="Pending entries that kept failing to persist (docs/durability.md).", no_args_is_help=True)
app.add_typer(dead_app, name="dead-letters")
ProjectOption = Annotated[str, typer.Option(help="project key (absolute path) or slug; default: every project")]


def _shared_redis() -> tuple[Any, Any, str]:
    """A client on the broker's Redis (REDIS_URL or the embedded one; never an in-process fakeredis,
    which another process cannot share), its keys, and its URL (for the drain queue)."""
    from broker.store.clients import make_sync_client
    from broker.store.embedded import resolve_redis_url
    from broker.store.keys import Keys

    settings = get_settings()
    url, _ = resolve_redis_url(settings.data_redis_url, settings.storage_root)
    if url.startswith("memory://"):
        _say("no Redis to share: set REDIS_URL, or install redis-server for the embedded default")
        raise typer.Exit(2)
    return make_sync_client(url, timeout=10), Keys(settings.redis_key_prefix), url


def _project_slug(client: Any, keys: Any, project: str) -> str | None:
    from broker.errors import BrokerError
    from broker.persistence.dead_letters import resolve_slug

    if not project:
        return None
    try:
        return resolve_slug(client, keys, project)
    except BrokerError as exc:
        _say(str(exc))
        raise typer.Exit(1) from exc


@dead_app.command("list")
def dead_letters_list(
    project: ProjectOption = "",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Show dead-lettered entries, oldest first: project, entry, when, tries, last error."""
    import json

    from broker.persistence.dead_letters import list_dead_letters

    client, keys, _ = _shared_redis()
    found = list_dead_letters(client, keys, _project_slug(client, keys, project))
    for dead in found:
        if as_json:
            print(json.dumps(dead.as_dict()))
        else:
            print(f"{dead.slug}\t{dead.entry}\t{dead.dead_at}\t{dead.attempts} tries\t{dead.error}")
    _say(f"{len(found)} dead letter(s)")


@dead_app.command("retry")
def dead_letters_retry(
    project: ProjectOption = "",
    entry: Annotated[list[str] | None, typer.Option(help="only this entry (e.g. msg:42); repeatable")] = None,
) -> None:
    """Put dead letters back in pending with fresh tries (fix their cause first) and enqueue a
    drain of their project; a running worker persists them."""
    from broker.persistence.dead_letters import dead_letter_summary, retry_dead_letters
    from broker.persistence.queue import PersistQueue
    from broker.store.clients import make_sync_client

    client, keys, url = _shared_redis()
    slug = _project_slug(client, keys, project)
    slugs = [slug] if slug else sorted(dead_letter_summary(client, keys).projects)
    queue_url = get_settings().queue_url(url)
    queue = PersistQueue.for_connection(make_sync_client(queue_url, decode_responses=False, timeout=10), keys)
    total = 0
    for each in slugs:
        moved = retry_dead_letters(client, keys, each, entry or ())
        if moved:
            queue.enqueue(each)
        total += len(moved)
    _say(f"{total} dead letter(s) back in pending")


@app.command()
def trim(project: ProjectOption = "") -> None:
    """Move the messages past the hot window (HOT_INBOX_MAX_MESSAGES, HOT_RETENTION_SECONDS) out of
    Redis now, as the persistence worker does every HOT_TRIM_INTERVAL_SECONDS (docs/operations.md)."""
    from broker.lifecycle.hot_window import HotTrimmer

    client, keys, _ = _shared_redis()
    slug = _project_slug(client, keys, project)
    trimmer = HotTrimmer(get_settings(), client, keys)
    if slug:
        report = trimmer.trim_project(slug)
        by_project = {slug: report.deleted} if report.deleted else {}
    else:
        report = trimmer.run_pass(seconds=float("inf"))
        by_project = report.by_project
    for each, count in sorted(by_project.items()):
        print(f"{each}\t{count}")
    _say(f"{report.deleted} message(s) moved out of Redis in {report.calls} batch(es)")


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

    from broker.errors import BrokerError
    from broker.reservations import guard

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

    from broker.errors import BrokerError
    from broker.reservations import guard

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

    from broker.reservations import guard

    raise typer.Exit(guard.check(project, Path(repo), dict(os.environ)))


@app.command("export-agent-mail")
def export_agent_mail(
    out: Annotated[Path, typer.Option(help="new or empty directory: gets storage.sqlite3 and archive/")],
    skip_redis: Annotated[
        bool, typer.Option(help="export the index and archive only: no window identities or products, no backlog check")
    ] = False,
    new_tokens: Annotated[
        bool, typer.Option(help="give every agent a new registration token, listed in <out>/registration-tokens.json")
    ] = False,
) -> None:
    """Write the persisted state (SQLite index, Git archive; window identities and products from
    Redis) in MCP Agent Mail's layout, to go back to it (docs/migration.md). Safe while the broker
    runs; changes the persistence worker has not written yet are not in it, and are reported."""
    from broker.errors import BrokerError
    from broker.migration.exporter import export_agent_mail as export
    from broker.migration.exporter import redis_rows_reader, unexported_backlog
    from broker.store.embedded import resolve_redis_url

    settings = get_settings()
    url = ""
    if not skip_redis:
        url, _ = resolve_redis_url(settings.data_redis_url, settings.storage_root)
        if url.startswith("memory://"):
            _say(
                "REDIS_UNREACHABLE: no Redis to read (REDIS_URL unset, no redis-server). Set REDIS_URL, or pass --skip-redis"
            )
            raise typer.Exit(1)
    try:
        live = redis_rows_reader(settings, url) if url else None
        report = export(settings.index_url, settings.archive_path, out, live, new_tokens=new_tokens)
    except BrokerError as exc:
        _say(str(exc))
        raise typer.Exit(1) from exc
    for line in report.lines():
        _say(line)
    if not url:
        _say(
            "persistence backlog not checked (--skip-redis): stop the broker after its worker drains for an exact export"
        )
        return
    behind = unexported_backlog(url, settings.redis_key_prefix)
    if behind is None:
        _say("persistence backlog unknown (Redis stopped answering): compare with health_check before relying on it")
    elif behind:
        _say(
            f"warning: changes not yet persisted in {len(behind)} project(s) ({', '.join(behind[:10])}) are not in the "
            "export: let the worker drain (health_check shows persistence.pending 0) and export again"
        )


def _add_realtime_commands() -> None:
    from broker.realtime.watch import hook_app, watch

    app.command()(watch)
    app.add_typer(hook_app, name="hook")


_add_realtime_commands()

if __name__ == "__main__":
    app()
