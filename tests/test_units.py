"""Units: slugs, the Lua ISO timestamp helper, names, id allocation, settings, validators."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from broker.config import Settings, get_settings
from broker.errors import BrokerError
from broker.identity.names import (
    ADJECTIVES,
    NOUNS,
    generate_candidates,
    is_explicit_id,
    is_generated_shape,
    mistake_hint,
    validate_name,
    validate_new_name,
)
from broker.identity.projects import check_project_key
from broker.identity.slugs import human_key_of
from broker.mail.inputs import check_limit, check_thread_id, check_topic, since_micros
from broker.store import embedded
from broker.store.clients import make_client
from broker.store.ids import IdAllocator
from broker.store.keys import slug_candidates, slugify
from broker.store.scripts import SCRIPT_DIR, lua_source, script_names, script_source

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- slugs -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "slug"),
    [
        ("/data/projects/Backend_X", "data-projects-backend-x"),
        ("/tmp/concurrent-test", "tmp-concurrent-test"),
        ("  Hello World  ", "hello-world"),
        ("/srv/My Repo (copy)/", "srv-my-repo-copy"),
        ("ÜBER/ñandú", "ber-and"),
        ("--already-slug--", "already-slug"),
        ("", "project"),
        ("///", "project"),
        ("/", "project"),
    ],
)
def test_slugify(value: str, slug: str) -> None:
    assert slugify(value) == slug


@pytest.mark.parametrize(
    ("key", "slug"),
    [
        ("/tmp/concurrent-test", "tmp-concurrent-test"),
        ("/tmp/concurrent-test/", "tmp-concurrent-test"),
        ("/a/b/../c", "a-c"),
        ("tmp-concurrent-test", "tmp-concurrent-test"),
        ("Backend", "backend"),
    ],
)
def test_plain_slug(key: str, slug: str) -> None:
    """The slug a key names when no other path took it first (the first candidate)."""
    checked = check_project_key(key)
    human_key = human_key_of(checked)
    assert (slugify(checked) if human_key is None else slug_candidates(human_key)[0]) == slug


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("", "INVALID_ARGUMENT"),
        ("a/b", "INVALID_ARGUMENT"),
        ("~/repo", "INVALID_ARGUMENT"),
        ("./x", "INVALID_ARGUMENT"),
        ("YOUR_PROJECT", "CONFIGURATION_ERROR"),
        ("/home/$PROJECT", "CONFIGURATION_ERROR"),
    ],
)
def test_project_slug_rejects(key: str, code: str) -> None:
    with pytest.raises(BrokerError) as caught:
        check_project_key(key)
    assert caught.value.code == code
    assert str(caught.value).startswith(f"{code}: ")


# -- the Lua ISO timestamp helper ---------------------------------------------------------------
def lua_helpers() -> str:
    """The time helpers (lib/common.lua, with what it includes), as a script gets them."""
    return lua_source("lib/common.lua")


def test_every_script_ends_with_its_own_body() -> None:
    assert set(script_names()) >= {"send_message", "register_agent", "mark_message", "fetch_topic"}
    for name in script_names():
        assert script_source(name).endswith((SCRIPT_DIR / f"{name}.lua").read_text())


@pytest.fixture
async def redis_client(backend: str) -> AsyncIterator[Redis]:
    client = make_client(backend)
    yield client
    await client.aclose()


ISO_SCRIPT = """
local out = {}
for i = 1, #ARGV, 2 do
  table.insert(out, iso_from_time(tonumber(ARGV[i]), tonumber(ARGV[i + 1])))
end
return out
"""

FIXED_MOMENTS = [
    (0, 0),  # the epoch
    (0, 1),
    (59, 999_999),
    (68_169_600, 0),  # 1972-02-29, first leap day after the epoch
    (951_782_400, 0),  # 2000-02-29 (divisible by 400: leap)
    (951_868_799, 123_456),  # 2000-02-29T23:59:59.123456
    (951_868_800, 0),  # 2000-03-01
    (978_220_800, 500_000),  # 2000-12-31 (day 366)
    (1_709_164_800, 0),  # 2024-02-29
    (1_735_689_599, 999_999),  # 2024-12-31T23:59:59.999999
    (1_735_689_600, 0),  # 2025-01-01
    (2_147_483_647, 10),  # 2038-01-19T03:14:07, beyond 32-bit
    (4_107_456_000, 0),  # 2100-02-28 (divisible by 100, not 400: no leap day)
    (4_107_542_400, 0),  # 2100-03-01
    (253_402_300_799, 999_999),  # 9999-12-31T23:59:59.999999
]


async def test_lua_iso_matches_python_isoformat(redis_client: Redis) -> None:
    rng = random.Random(7)
    moments = FIXED_MOMENTS + [
        (rng.randrange(0, 253_402_300_800), rng.choice([0, rng.randrange(1, 10**6)])) for _ in range(300)
    ]
    script = redis_client.register_script(lua_helpers() + "\n" + ISO_SCRIPT)
    args = [str(value) for moment in moments for value in moment]
    got = await script(keys=[], args=args)
    expected = [(EPOCH + timedelta(seconds=sec, microseconds=usec)).isoformat() for sec, usec in moments]
    assert got == expected
    assert got[0] == "1970-01-01T00:00:00+00:00"
    assert got[5] == "2000-02-29T23:59:59.123456+00:00"
    assert got[12] == "2100-02-28T00:00:00+00:00"


async def test_lua_now_is_consistent(redis_client: Redis) -> None:
    script = redis_client.register_script(lua_helpers() + "\nlocal iso, us, ms = now()\nreturn {iso, us, ms}")
    before = datetime.now(UTC)
    iso, micros, millis = await script(keys=[], args=[])
    after = datetime.now(UTC)
    moment = datetime.fromisoformat(iso)
    assert moment == EPOCH + timedelta(microseconds=int(micros))
    assert moment.isoformat() == iso
    assert int(millis) == int(micros) // 1000
    assert before - timedelta(seconds=1) <= moment <= after + timedelta(seconds=1)


# -- names ---------------------------------------------------------------------------------------
def test_word_lists_match_the_reference() -> None:
    assert len(ADJECTIVES) == len(set(ADJECTIVES)) == 62
    assert len(NOUNS) == len(set(NOUNS)) == 69


def test_generate_candidates() -> None:
    names = generate_candidates(200)
    assert len(names) == len(set(names)) == 200
    for name in names:
        assert is_generated_shape(name)
        adjective = next(a for a in ADJECTIVES if name.startswith(a) and name[len(a) :] in NOUNS)
        assert name == adjective + name[len(adjective) :]
        assert validate_new_name(name) == name


@pytest.mark.parametrize(
    "name", ["BlueLake", "bluelake", "BLUELAKE", "alpha-one", "cc-0", "worker_42", "build.bot", "a-" + "x" * 126]
)
def test_valid_new_names(name: str) -> None:
    assert validate_new_name(f"  {name} ") == name


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", "INVALID_ARGUMENT"),
        ("   ", "INVALID_ARGUMENT"),
        ("Alice", "INVALID_AGENT_NAME"),
        ("BlueLakes", "INVALID_AGENT_NAME"),
        ("Blue Lake", "INVALID_AGENT_NAME"),
        ("-alpha", "INVALID_AGENT_NAME"),
        ("a-" + "x" * 127, "INVALID_AGENT_NAME"),
        ("claude-code", "PROGRAM_NAME_AS_AGENT"),
        ("Codex", "PROGRAM_NAME_AS_AGENT"),
        ("gpt-4o", "MODEL_NAME_AS_AGENT"),
        ("my-opus-helper", "MODEL_NAME_AS_AGENT"),
        ("bob@example.com", "EMAIL_AS_AGENT"),
        ("everyone", "BROADCAST_ATTEMPT"),
        ("YOUR_AGENT", "CONFIGURATION_ERROR"),
        ("<AGENT>", "CONFIGURATION_ERROR"),
    ],
)
def test_invalid_new_names(name: str, code: str) -> None:
    with pytest.raises(BrokerError) as caught:
        validate_new_name(name)
    assert caught.value.code == code
    assert str(caught.value).startswith(f"{code}: ")


def test_lookup_names_are_checked_for_shape_only() -> None:
    # Any well-shaped name can be looked up (registered names such as 'greenlake' must work).
    for name in ("greenlake", "Alice", "claude-code", "x" * 128):
        assert validate_name(name) == name
    for name in ("x" * 129, "a b", "a/b", "über"):
        with pytest.raises(BrokerError):
            validate_name(name)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("claude-code", "PROGRAM_NAME_AS_AGENT"),
        ("Gemini", "PROGRAM_NAME_AS_AGENT"),
        ("sonnet-4", "MODEL_NAME_AS_AGENT"),
        ("x@y.org", "EMAIL_AS_AGENT"),
        ("@all", "BROADCAST_ATTEMPT"),
        ("*", "BROADCAST_ATTEMPT"),
        ("x@y", None),
        ("BlueLake", None),
        ("alpha-one", None),
    ],
)
def test_mistake_hints(name: str, code: str | None) -> None:
    hint = mistake_hint(name)
    assert (hint[0] if hint else None) == code


def test_explicit_ids_need_a_separator() -> None:
    assert all(is_explicit_id(n) for n in ("alpha-one", "cc-0", "worker_42", "a.b"))
    assert not any(is_explicit_id(n) for n in ("alpha", "BlueLake", "-x", "a b-c"))


# -- validators ----------------------------------------------------------------------------------
def test_thread_topic_limit_and_timestamp_validators() -> None:
    assert check_thread_id(None) == check_thread_id("  ") == ""
    assert check_thread_id(" FEAT-123 ") == "FEAT-123"
    assert check_thread_id("a" * 128) == "a" * 128
    assert check_topic("  build_status-2 ") == "build_status-2"
    assert check_topic("t" * 64) == "t" * 64
    assert check_limit(1) == 1 and check_limit(1000) == 1000
    assert since_micros(None) == since_micros(" ") == ""
    assert since_micros("2025-01-01T00:00:00Z") == str(1_735_689_600 * 10**6)
    assert since_micros("2025-01-01T00:00:00") == str(1_735_689_600 * 10**6)
    assert since_micros("2025-01-01T02:00:00.000001+02:00") == str(1_735_689_600 * 10**6 + 1)
    assert since_micros("1969-12-31T23:59:59Z") == since_micros("1970-01-01T00:00:00Z") == ""  # all mail is newer
    for bad, function in (("a" * 129, check_thread_id), ("_x", check_thread_id), ("t" * 65, check_topic)):
        with pytest.raises(BrokerError):
            function(bad)


# -- id allocation -------------------------------------------------------------------------------
async def test_id_allocators_hand_out_unique_ids_under_concurrency(redis_client: Redis) -> None:
    key = f"t{random.randrange(10**12)}:ids:message"
    allocators = [IdAllocator(key, block=16) for _ in range(3)]  # three processes sharing one counter

    async def take(allocator: IdAllocator) -> int:
        await asyncio.sleep(0)
        return await allocator.next_id(redis_client)

    try:
        ids = await asyncio.gather(*(take(allocators[i % 3]) for i in range(900)))
        assert len(set(ids)) == 900
        top = int(await redis_client.get(key))
        assert max(ids) <= top and min(ids) >= 1
        # After a reset (new loop or Redis) an allocator takes a fresh block: no id comes twice.
        allocators[0].reset()
        more = await asyncio.gather(*(take(allocators[0]) for _ in range(40)))
        assert len(set(more)) == 40 and not set(more) & set(ids)
        assert min(more) > top
    finally:
        await redis_client.delete(key)


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
