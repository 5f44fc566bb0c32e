"""The embedded default (DESIGN decision 9): with no REDIS_URL, run a private Redis.

A managed ``redis-server`` child (data under STORAGE_ROOT, AOF on) when the binary exists,
else in-process fakeredis (``memory://``). One per process; the child stops at exit.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

_chosen: tuple[str, str] | None = None
_child: subprocess.Popen[bytes] | None = None


def _die_with_parent() -> None:
    """Linux: have the kernel stop the child if this process dies without running atexit."""
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


def start_redis_server(
    data_dir: Path, port: int | None = None, *, appendonly: bool = True, timeout: float = 10.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redis-server`` on loopback with its files in ``data_dir``; wait until it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--logfile",
            str(data_dir / "redis.log"),
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    url = f"redis://127.0.0.1:{port}/0"
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


def _stop_child() -> None:
    if _child is not None and _child.poll() is None:
        _child.terminate()
        try:
            _child.wait(5)
        except subprocess.TimeoutExpired:
            _child.kill()


def resolve_redis_url(redis_url: str, storage_root: Path) -> tuple[str, str]:
    """The Redis URL to use and a sentence saying which backend was chosen."""
    global _chosen, _child
    if redis_url:
        return redis_url, f"Redis at {redis_url.split('@')[-1]} (REDIS_URL)"
    if _chosen is None:
        if shutil.which("redis-server"):
            _child, url = start_redis_server(storage_root / "redis")
            atexit.register(_stop_child)
            _chosen = (url, f"embedded redis-server child at {url}, AOF in {storage_root / 'redis'}")
        else:
            _chosen = ("memory://embedded", "in-process fakeredis (no redis-server on PATH; state is lost at exit)")
    return _chosen
