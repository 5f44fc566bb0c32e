"""The embedded default (docs/architecture.md, decision 9): with no REDIS_URL, run a private Redis.

When the ``redis-server`` binary exists, one redis-server per STORAGE_ROOT (data and AOF in
``<STORAGE_ROOT>/redis``) is shared by every broker process that uses that root: agents that
each spawn their own stdio broker must still see one another's mail. The first process starts
it detached; later ones find it through ``server.url`` (checked under a file lock, and only
trusted if that server's data directory is ours). It keeps running after the brokers exit;
``broker redis-stop`` stops it. Without the binary: in-process fakeredis (``memory://``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from broker.store.clients import is_cluster_url, plain_url

_chosen: tuple[str, str] | None = None


def _die_with_parent() -> None:
    """Linux: have the kernel stop the child if this process dies without cleaning up."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def start_redis_server(
    data_dir: Path,
    port: int | None = None,
    *,
    appendonly: bool = True,
    detached: bool = False,
    password: str | None = None,
    timeout: float = 10.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redis-server`` on loopback with its files in ``data_dir``; wait until it answers.

    A detached server outlives this process; otherwise it is stopped if this process dies.
    A password goes into a config file only the owner can read (not onto the command line,
    which every local user can see)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    command = ["redis-server"]
    if password:
        _write_private(data_dir / "redis.conf", f"requirepass {password}\n")
        command.append(str(data_dir / "redis.conf"))
    command += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", ""]
    command += ["--appendonly", "yes" if appendonly else "no", "--logfile", str(data_dir / "redis.log")]
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=detached,
        preexec_fn=None if detached else _die_with_parent,
    )
    url = f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=0.5).ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"redis-server did not start; see {data_dir / 'redis.log'}") from None
            time.sleep(0.05)


def _serves_dir(url: str, data_dir: Path) -> bool:
    """True if a Redis answers at ``url`` and keeps its files in ``data_dir`` (so it is ours)."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, decode_responses=True)
        return Path(client.config_get("dir")["dir"]).resolve() == data_dir.resolve()
    except (redis.RedisError, OSError, KeyError):
        return False


def shared_redis_server(data_dir: Path) -> str:
    """The URL of the redis-server for ``data_dir``, starting it if none is running."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)  # the AOF holds every message; the URL holds the password
    url_file = data_dir / "server.url"
    with open(data_dir / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if url_file.exists() and _serves_dir(url := url_file.read_text().strip(), data_dir):
            return url
        # A password keeps other local users (who can reach loopback) from bypassing agent auth.
        _proc, url = start_redis_server(data_dir, detached=True, password=secrets.token_urlsafe(24))
        _write_private(url_file, url + "\n")
        return url


def stop_shared_redis_server(data_dir: Path) -> str | None:
    """Shut down the shared redis-server of ``data_dir`` (AOF is flushed); its URL, or None."""
    url_file = data_dir / "server.url"
    if not url_file.exists() or not _serves_dir(url := url_file.read_text().strip(), data_dir):
        return None
    with contextlib.suppress(redis.ConnectionError):  # the server drops the connection as it exits
        redis.Redis.from_url(url).shutdown()
    url_file.unlink(missing_ok=True)
    return url


def _without_password(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


def resolve_redis_url(redis_url: str, storage_root: Path) -> tuple[str, str]:
    """The Redis URL to use and a sentence saying which backend was chosen."""
    global _chosen
    if is_cluster_url(redis_url):
        seed = _without_password(plain_url(redis_url))
        return redis_url, f"Redis Cluster seeded by {seed} (REDIS_URL, REDIS_CLUSTER=true)"
    if redis_url:
        return redis_url, f"Redis at {_without_password(redis_url)} (REDIS_URL)"
    if _chosen is None:
        if shutil.which("redis-server"):
            data_dir = storage_root / "redis"
            url = shared_redis_server(data_dir)
            _chosen = (
                url,
                f"embedded redis-server at {_without_password(url)} with AOF in {data_dir}, shared by broker processes using "
                "this STORAGE_ROOT; it keeps running after exit (`broker redis-stop` stops it)",
            )
        else:
            _chosen = ("memory://embedded", "in-process fakeredis (no redis-server on PATH; state is lost at exit)")
    return _chosen
