"""Lua scripts: one file per operation in broker/scripts/, helpers in broker/scripts/lib/.

Redis Lua has no ``require``, so each script is loaded as the helpers followed by its own
body. Scripts are registered with redis-py (EVALSHA, reloaded on NOSCRIPT), so fakeredis[lua]
runs the very same code as a real Redis.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from redis import Redis as SyncClient
from redis.asyncio import Redis
from redis.commands.core import Script

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


# Scripts registered once per synchronous client (the persistence worker, the CLI).
_sync_registered: WeakKeyDictionary[SyncClient, dict[str, Script]] = WeakKeyDictionary()
_sync_registered_lock = threading.Lock()


def run_sync(client: SyncClient, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run a script on a synchronous client (registered on it once: EVALSHA, reloaded on NOSCRIPT)."""
    with _sync_registered_lock:
        scripts = _sync_registered.setdefault(client, {})
        script = scripts.get(name)
        if script is None:
            script = scripts[name] = client.register_script(script_source(name))
    return script(keys=keys, args=args)
