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
START_SECONDS = 60  # for one process to answer /health/liveness (a busy CI machine: seconds of imports)


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
    env: dict[str, str],
    broker: str = BROKER,
    cwd: Path | None = None,
    host: str = "127.0.0.1",
    new_session: bool = False,
) -> Iterator[Served]:
    """Run ``broker serve`` on a random port of ``host``; yield once /health/liveness answers."""
    with serving_all([env], broker, cwd, host, new_session) as [served]:
        yield served


@contextmanager
def serving_all(
    envs: list[dict[str, str]],
    broker: str = BROKER,
    cwd: Path | None = None,
    host: str = "127.0.0.1",
    new_session: bool = False,
) -> Iterator[list[Served]]:
    """One ``broker serve`` per environment, started together (their start-ups overlap); yield
    them once each one's /health/liveness answers. ``new_session``: each in a session of its
    own, as a service manager starts it (the benchmarks use it: Linux shares CPU fairly between
    sessions, so brokers started in the caller's session would split one session's share on a
    busy machine)."""
    started: list[Served] = []
    try:
        for env in envs:
            started.append(_launch(env, broker, cwd, host, new_session))
        # imports alone take seconds of CPU each: several at once on a busy machine need longer
        deadline = time.monotonic() + START_SECONDS * len(envs)
        for served in started:
            _wait_alive(served, deadline)
        yield started
    finally:
        for served in started:
            stop_process(served.proc)
            served.log.unlink(missing_ok=True)


def _launch(env: dict[str, str], broker: str, cwd: Path | None, host: str, new_session: bool) -> Served:
    port = free_port()
    with tempfile.NamedTemporaryFile("w+", prefix="broker-serve-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [broker, "serve", "--host", host, "--port", str(port)],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=new_session,
        )
    return Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/mcp/", proc, Path(log.name))


def _wait_alive(served: Served, deadline: float) -> None:
    while True:
        try:
            if httpx.get(f"{served.base}/health/liveness", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if served.proc.poll() is not None or time.monotonic() > deadline:
            served.proc.kill()
            served.proc.wait()
            raise AssertionError(f"broker serve did not start:\n{served.output()}")
        time.sleep(0.1)


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
