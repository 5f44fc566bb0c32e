"""Lua scripts: one file per operation in broker/scripts/, helpers in broker/scripts/lib/.

Redis Lua has no ``require``, so each script is loaded as the helpers followed by its own
body. Scripts are registered with redis-py (EVALSHA, reloaded on NOSCRIPT), so fakeredis[lua]
runs the very same code as a real Redis.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

SCRIPT_DIR = Path(__file__).resolve().parent.parent / "scripts"


@cache
def script_source(name: str) -> str:
    helpers = "\n".join(p.read_text() for p in sorted((SCRIPT_DIR / "lib").glob("*.lua")))
    return helpers + "\n" + (SCRIPT_DIR / f"{name}.lua").read_text()


def script_names() -> list[str]:
    return sorted(p.stem for p in SCRIPT_DIR.glob("*.lua"))


class Scripts:
    """The broker's scripts registered on one client; ``await scripts.run(name, keys, args)``."""

    def __init__(self, client: Redis) -> None:
        self._scripts = {name: client.register_script(script_source(name)) for name in script_names()}

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    def sha(self, name: str) -> str:
        """The script's SHA-1 (what EVALSHA, SLOWLOG and MONITOR show)."""
        return self._scripts[name].sha
