"""Settings and connections: HTTP path, agent auth by bind address, key prefix, storage paths,
Redis URLs, session bindings and the embedded default."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.config import Settings, get_settings
from broker.store import embedded
from broker.store.clients import make_client


# -- settings and connections --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "path"),
    [("/mcp/", "/mcp/"), ("/mcp", "/mcp/"), ("mcp", "/mcp/"), ("//api/mcp//", "/api/mcp/"), ("/", "/"), ("", "/")],
)
def test_http_path_is_normalised(given: str, path: str) -> None:
    assert Settings(HTTP_PATH=given).http_path == path


def test_http_path_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PATH", "api")
    monkeypatch.setenv("REDIS_KEY_PREFIX", "envprefix")
    settings = Settings()
    assert (settings.http_path, settings.redis_key_prefix) == ("/api/", "envprefix")


@pytest.mark.parametrize(
    ("host", "auth"),
    [
        ("0.0.0.0", "required"),
        ("::", "required"),
        ("192.168.1.20", "required"),
        ("broker.example.com", "required"),
        ("127.0.0.1", "open"),
        ("127.0.0.2", "open"),
        ("localhost", "open"),
        ("::1", "open"),
        (None, "open"),
    ],
)
def test_effective_agent_auth(host: str | None, auth: str) -> None:
    assert Settings(AGENT_AUTH="open").effective_agent_auth(host) == auth
    assert Settings(AGENT_AUTH="required").effective_agent_auth(host) == "required"


@pytest.mark.parametrize("prefix", ["", "a:b", "{x}", "a b"])
def test_key_prefix_is_validated(prefix: str) -> None:
    with pytest.raises(ValidationError):
        Settings(REDIS_KEY_PREFIX=prefix)


def test_storage_paths(tmp_path: Path) -> None:
    settings = Settings(STORAGE_ROOT=tmp_path / "x" / ".." / "root")
    assert settings.storage_root == (tmp_path / "root").resolve()
    assert settings.index_path == settings.storage_root / "index.sqlite3"
    assert Settings(STORAGE_ROOT=tmp_path, DATABASE_PATH=tmp_path / "db.sqlite3").index_path == tmp_path / "db.sqlite3"
    assert Settings(STORAGE_ROOT="~/broker-data").storage_root.is_absolute()


def test_unsupported_redis_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not supported"):
        make_client("http://127.0.0.1:6379")


async def test_memory_urls_share_one_server_per_name() -> None:
    name = f"memory://shared-{random.randrange(10**12)}"
    first, second, other = make_client(name), make_client(name), make_client(name + "-other")
    try:
        await first.set("k", "v")
        assert await second.get("k") == "v"
        assert await other.get("k") is None
    finally:
        await first.flushall()
        for client in (first, second, other):
            await client.aclose()


# -- session bindings ------------------------------------------------------------------------------
def test_session_bindings_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients on the 2026-07-28 protocol (fastmcp 4's default) get a new session id on every
    request, so under `required` auth every call that passes a token creates a binding that is
    never used again. Those must not pile up: memory has to stay bounded."""
    from broker.identity import auth

    bindings = auth.SessionBindings("required", ttl_seconds=86400)
    counter = iter(range(10**9))
    monkeypatch.setattr(auth, "session_id", lambda: f"request-{next(counter)}")
    for _ in range(100_050):
        bindings.bind("proj", "BlueLake")
    assert len(bindings._bound) <= 100_000


def test_settings_come_from_the_environment_and_the_cache_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("HTTP_PORT", "9911")
    monkeypatch.setenv("AGENT_AUTH", "required")
    first = get_settings()
    assert (first.http_port, first.agent_auth) == (9911, "required")
    monkeypatch.setenv("HTTP_PORT", "9912")
    assert get_settings() is first  # cached until cleared
    get_settings.cache_clear()
    assert get_settings().http_port == 9912
    get_settings.cache_clear()


def test_embedded_default_without_redis_server_is_fakeredis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embedded, "_chosen", None)
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    url, description = embedded.resolve_redis_url("", tmp_path)
    assert url.startswith("memory://")
    assert "fakeredis" in description and "lost at exit" in description
    assert embedded.resolve_redis_url("redis://:secret@db:6379/0", tmp_path)[1] == "Redis at db:6379/0 (REDIS_URL)"
