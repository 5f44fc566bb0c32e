"""Running ``broker serve`` as a real process from any installed ``broker`` executable (the test
venv's, or a fresh venv's built from the wheel)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx

BROKER = str(Path(sys.executable).with_name("broker"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def broker_env(redis_url: str, root: Path, **extra: str) -> dict[str, str]:
    """The environment minus any broker setting of the caller's, on a key prefix of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HTTP_", "AGENT_AUTH", "REDIS_", "AGENT_BROKER_", "PYTHONPATH"))
    }
    env.update(REDIS_URL=redis_url, REDIS_KEY_PREFIX=f"srv{uuid4().hex[:8]}", STORAGE_ROOT=str(root), **extra)
    return env


@dataclass
class Served:
    base: str  # http://127.0.0.1:<port>
    mcp_url: str  # base + /mcp/
    proc: subprocess.Popen[str]
    log: Path  # what the process printed (a file, not a pipe: a full pipe would block the broker)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def serving(
    env: dict[str, str], broker: str = BROKER, cwd: Path | None = None, host: str = "127.0.0.1"
) -> Iterator[Served]:
    """Run ``broker serve`` on a random port of ``host``; yield once /health/liveness answers."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w+", prefix="broker-serve-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [broker, "serve", "--host", host, "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    served = Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/mcp/", proc, Path(log.name))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{served.base}/health/liveness", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"broker serve did not start:\n{served.output()}")
            time.sleep(0.1)
        yield served
    finally:
        stop_process(proc)
        served.log.unlink(missing_ok=True)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serving_at(env: dict[str, str], host: str = "127.0.0.1") -> Iterator[str]:
    """``serving``, yielding just the base URL."""
    with serving(env, host=host) as served:
        yield served.base
