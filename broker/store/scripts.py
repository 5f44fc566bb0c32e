"""Lua scripts: one file per operation in broker/scripts/, helpers in broker/scripts/lib/.

Redis Lua has no ``require``, so a script names the helper files it uses in include lines
at its top, after its header comment::

    -- @include lib/common.lua

Paths are relative to broker/scripts/, in scripts and helper files alike. A helper file may
include others the same way. Loading a script resolves its includes recursively and sends
each included file once, dependencies first, followed by the script itself: a helper defined
with ``local function`` is only visible to code that comes after it. Include lines are
allowed only in a file's leading block of comments (a late one would not be where it reads).

Scripts are registered with redis-py (EVALSHA, reloaded on NOSCRIPT), so fakeredis[lua]
runs the very same code as a real Redis. On a Redis Cluster each script is sent with a
``#!lua`` shebang line and no flags, which makes Redis refuse any access to a key outside the
slot of the script's declared keys ("keys that do not hash to the same slot"): a script that
strayed from its project fails loudly instead of working on one node and not on another
(fakeredis does not parse shebangs, which is why they are not in the files).
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any

from redis import Redis as SyncClient
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster as SyncCluster
from redis.exceptions import NoScriptError

SCRIPT_DIR = Path(__file__).resolve().parent.parent / "scripts"

_INCLUDE = re.compile(r"--\s*@include\s+(\S+)\s*$")


class ScriptIncludeError(ValueError):
    """An include line names a missing file, forms a cycle, or is not in the leading comments."""


def _read(relative: str) -> str:
    path = SCRIPT_DIR / relative
    if not path.is_file():
        raise ScriptIncludeError(f"Lua include not found: {relative} (looked in {SCRIPT_DIR})")
    return path.read_text()


def includes(relative: str) -> list[str]:
    """The files one Lua file includes directly (paths relative to SCRIPT_DIR), in order."""
    found: list[str] = []
    leading = True
    for number, line in enumerate(_read(relative).splitlines(), 1):
        text = line.strip()
        match = _INCLUDE.match(text)
        if match and not leading:
            raise ScriptIncludeError(f"{relative}:{number}: @include after the first line of code")
        if match:
            found.append(match.group(1))
        elif text and not text.startswith("--"):
            leading = False
    return found


def resolve_includes(relative: str) -> list[str]:
    """Every file ``relative`` needs, each once, each after the files it includes; the file
    itself comes last."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise ScriptIncludeError(f"Lua include cycle: {cycle}")
        visiting.append(name)
        for child in includes(name):
            visit(child)
        visiting.pop()
        order.append(name)

    visit(relative)
    return order


def lua_source(relative: str) -> str:
    """A Lua file with everything it includes before it (``relative`` to SCRIPT_DIR)."""
    return "\n".join(_read(part) for part in resolve_includes(relative))


CLUSTER_SHEBANG = "#!lua\n"


@cache
def script_source(name: str, cluster: bool = False) -> str:
    """The text sent to Redis for script ``name``: its included helpers, then its own body
    (after the shebang that makes a cluster enforce one slot)."""
    return (CLUSTER_SHEBANG if cluster else "") + lua_source(f"{name}.lua")


def script_names() -> list[str]:
    """The operation scripts (broker/scripts/*.lua; the helpers in lib/ are not scripts)."""
    return sorted(p.stem for p in SCRIPT_DIR.glob("*.lua"))


class Scripts:
    """The broker's scripts registered on one client; ``await scripts.run(name, keys, args)``."""

    def __init__(self, client: Redis) -> None:
        cluster = isinstance(client, AsyncCluster)
        self._scripts = {name: client.register_script(script_source(name, cluster)) for name in script_names()}

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    def sha(self, name: str) -> str:
        """The script's SHA-1 (what EVALSHA, SLOWLOG and MONITOR show)."""
        return self._scripts[name].sha


@cache
def _sha(name: str, cluster: bool) -> str:
    return hashlib.sha1(script_source(name, cluster).encode()).hexdigest()


def run_sync(client: SyncClient, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run a script on a synchronous client: EVALSHA, loading the script on NOSCRIPT. Nothing is
    kept per client (a registered Script holds its client, so a cache of them kept every
    short-lived client of a hard delete alive)."""
    cluster = isinstance(client, SyncCluster)
    try:
        return client.evalsha(_sha(name, cluster), len(keys), *keys, *args)
    except NoScriptError:
        client.script_load(script_source(name, cluster))
        return client.evalsha(_sha(name, cluster), len(keys), *keys, *args)
