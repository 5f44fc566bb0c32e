"""examples/two_agents.py, run as a user would: a separate process with the official MCP Python
SDK, against a real `broker serve` (with a bearer token), on the session's real Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from process_helpers import broker_env, serving

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "two_agents.py"


def test_two_agents_example_runs_end_to_end(redis_url: str, tmp_path: Path) -> None:
    env = broker_env(redis_url, tmp_path / "storage", HTTP_BEARER_TOKEN="example-token")
    project = tmp_path / "repo"
    with serving(env) as served:
        for _ in range(2):  # a second run against the same broker and project works too
            done = subprocess.run(
                [sys.executable, str(EXAMPLE), "--url", served.mcp_url, "--project", str(project)],
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            lines = done.stdout.splitlines()
            assert lines[-1] == "ok"
            assert any("woke with mail" in line for line in lines)
            assert any("woke again: Re: Refactoring src/api" in line for line in lines)
