"""compose.yaml, its host-tools override and .dockerignore, checked without a Docker engine:
the compose files against the Compose Specification's JSON schema (check-jsonschema ships it),
the structure this project relies on, and each healthcheck command run for real against a
`broker serve` / `broker worker` process."""

from __future__ import annotations

import fnmatch
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from process_helpers import BROKER, Served, broker_env, serving_all

from broker.cli import app

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
HOST_TOOLS = ROOT / "compose.host-tools.yaml"
CLUSTER = ROOT / "compose.cluster.yaml"
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def schema_check(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_files_follow_the_compose_spec(tmp_path: Path) -> None:
    done = schema_check(COMPOSE, HOST_TOOLS, CLUSTER)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check does catch a mistake: a misspelt healthcheck key.
    bad = compose()
    bad["services"]["worker"]["healthcheck"]["intervall"] = "5s"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert schema_check(tmp_path / "bad.yaml").returncode != 0


def test_compose_structure() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "broker", "worker"}
    # Redis holds all mail without a password: never published by the main file...
    assert "ports" not in services["redis"] and "network_mode" not in services["redis"]
    # ...and the opt-in override publishes it on the host's loopback only.
    override = yaml.safe_load(HOST_TOOLS.read_text())["services"]["redis"]["ports"]
    assert override and all(port.startswith("127.0.0.1:") for port in override)
    for name in ("redis", "broker", "worker"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for name in ("broker", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_cluster_compose_structure() -> None:
    services = yaml.safe_load(CLUSTER.read_text())["services"]
    nodes = ["redis-1", "redis-2", "redis-3"]
    brokers = [name for name in services if name.startswith("broker-")]
    assert len(brokers) >= 2
    for name in [*nodes, "queue", "cluster-init"]:
        assert "ports" not in services[name] and "network_mode" not in services[name], name
    for name in nodes:
        assert services[name]["command"][0] == "redis-server" and "--cluster-enabled" in services[name]["command"]
    assert "--cluster create" in services["cluster-init"]["command"][-1]
    for name in [*brokers, "worker"]:
        env = services[name]["environment"]
        assert env["REDIS_CLUSTER"] == "true" and env["REDIS_URL"] == "redis://redis-1:6379/0", name
        assert env["QUEUE_REDIS_URL"] == "redis://queue:6379/0", name
        assert services[name]["depends_on"]["cluster-init"]["condition"] == "service_completed_successfully"
    for name in brokers:
        assert services[name]["environment"]["PERSISTENCE_WORKER"] == "external", name


def test_compose_commands_exist_in_the_cli() -> None:
    cli = typer.main.get_command(app)
    cluster = yaml.safe_load(CLUSTER.read_text())["services"]
    for name, argv in [(name, compose()["services"][name]["command"]) for name in ("broker", "worker")] + [
        (name, cluster[name]["command"]) for name in ("broker-1", "broker-2", "worker")
    ]:
        assert argv[0] == "broker", name
        command = cli.commands[argv[1]]  # type: ignore[attr-defined]
        known = {opt for param in command.params for opt in param.opts}
        given = {arg for arg in argv[2:] if arg.startswith("--")}
        assert given <= known, (name, given - known)


def healthcheck(service: str) -> list[str]:
    return compose()["services"][service]["healthcheck"]["test"][1:]


async def test_broker_healthcheck_passes_only_when_ready(redis_url: str, tmp_path: Path) -> None:
    test = healthcheck("broker")

    def probe(served: Served) -> subprocess.CompletedProcess[str]:
        port = served.base.rsplit(":", 1)[1]
        argv = [sys.executable if arg == "python" else arg.replace(":8765/", f":{port}/") for arg in test]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    # Both brokers start together (their start-ups overlap); the second one's Redis is unreachable.
    envs = [broker_env(redis_url, tmp_path / "ok"), broker_env("redis://127.0.0.1:1/0", tmp_path / "down")]
    with serving_all(envs) as (ready, unready):
        done = probe(ready)
        assert done.returncode == 0, done.stderr
        # A broker whose Redis is unreachable is alive but not ready: the healthcheck fails.
        assert probe(unready).returncode != 0


def test_worker_healthcheck_follows_the_worker(redis_url: str, tmp_path: Path) -> None:
    test = healthcheck("worker")
    assert test[:3] == ["python", "-m", "workers.alive"]
    env = broker_env(redis_url, tmp_path)

    def probe() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *test[1:]], env=env, capture_output=True, text=True, timeout=30)

    before = probe()
    assert before.returncode == 1 and "no persistence worker" in before.stderr, before.stderr
    worker = subprocess.Popen([BROKER, "worker"], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while (alive := probe()).returncode != 0:
            assert worker.poll() is None and time.monotonic() < deadline, alive.stderr
            time.sleep(0.3)
        # Another key prefix has no worker: the check is about this broker's queue.
        other = subprocess.run(
            [sys.executable, *test[1:]], env={**env, "REDIS_KEY_PREFIX": "nobody"}, capture_output=True, timeout=30
        )
        assert other.returncode == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    assert probe().returncode == 1  # a stopped worker leaves rq's registry


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins
    (``**/x`` matches x at any depth)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    inner = ["/".join(parts[j : i + 1]) for i in range(len(parts)) for j in range(i + 1)]
    ignored = False
    for raw in patterns:
        negate, pattern = raw.startswith("!"), raw.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(name, pattern[3:]) for name in inner)
        else:
            hit = any(fnmatch.fnmatchcase(name, pattern) for name in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        src
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for src in shlex.split(line)[1:-1]
    ]
    assert {"pyproject.toml", "README.md", "LICENSE", "broker", "workers"} <= set(copied)
    for src in copied:
        assert not dockerignored(src, patterns), src
    assert not dockerignored("broker/scripts/lib/common.lua", patterns)
    for junk in (".venv/lib/python3.11/site.py", "tests/test_serve.py", ".git/HEAD", "broker/__pycache__/cli.pyc"):
        assert dockerignored(junk, patterns), junk
