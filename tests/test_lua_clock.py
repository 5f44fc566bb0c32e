"""The clock of the Lua scripts (Redis TIME, ISO-8601 like Python's isoformat) and how a script
is assembled from its file and its includes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from broker.store.scripts import SCRIPT_DIR, lua_source, script_names, script_source

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- the Lua ISO timestamp helper ---------------------------------------------------------------
def lua_helpers() -> str:
    """The time helpers (lib/common.lua, with what it includes), as a script gets them."""
    return lua_source("lib/common.lua")


def test_every_script_ends_with_its_own_body() -> None:
    assert set(script_names()) >= {"send_message", "register_agent", "mark_message", "fetch_topic"}
    for name in script_names():
        assert script_source(name).endswith((SCRIPT_DIR / f"{name}.lua").read_text())


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
