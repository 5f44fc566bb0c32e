"""The package as users install it: a wheel built from the checkout's files, installed with its
declared dependencies into a fresh venv outside the source tree, serves MCP over HTTP.

The rest of the suite runs from an editable install, which imports whatever lies in the checkout;
this test is the one that notices a module or a Lua script missing from the wheel.
Time: about 20 s with a warm pip cache (the dependencies come from the wheel's own metadata).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from process_helpers import broker_env, serving

import broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parent.parent


def checkout_copy(dest: Path) -> Path:
    """Copy the files git would commit (tracked and new, not ignored): what a clean checkout has,
    without the .venv, build/ or *.egg-info of this one."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():  # a tracked file deleted in the worktree is not part of it
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=540)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{output}"
    return output


def deprecations(output: str) -> list[str]:
    return [line for line in output.splitlines() if "deprecat" in line.lower()]


async def test_wheel_installs_and_serves_from_a_fresh_venv(redis_url: str, tmp_path: Path) -> None:
    source = checkout_copy(tmp_path / "src")
    built = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"), "."], source)
    assert deprecations(built) == []
    (wheel,) = (tmp_path / "dist").glob("agent_broker-*.whl")
    assert wheel.name.startswith(f"agent_broker-{broker.__version__}-")

    # A fresh venv in a directory with no checkout in it: nothing of the source is importable.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run([sys.executable, "-m", "venv", str(tmp_path / "venv")], outside)
    bin_dir = tmp_path / "venv" / "bin"
    # --no-compile: pip's byte-compiling of every dependency is a third of the install's CPU and
    # checks nothing here (the imports below compile what the broker loads)
    installed = run([str(bin_dir / "pip"), "install", "--no-compile", str(wheel)], outside)
    assert deprecations(installed) == []
    where = run(
        [str(bin_dir / "python"), "-c", "import broker.mcp.tools, workers.jobs, workers.alive; print(broker.__file__)"],
        outside,
    )
    assert Path(where.strip()).is_relative_to(tmp_path / "venv")
    assert run([str(bin_dir / "broker"), "--version"], outside).strip() == f"agent-broker {broker.__version__}"

    env = broker_env(redis_url, tmp_path / "storage")
    with serving(env, broker=str(bin_dir / "broker"), cwd=outside) as served:
        async with Client(StreamableHttpTransport(served.mcp_url)) as client:
            assert client.server_info is not None
            assert (client.server_info.name, client.server_info.version) == ("agent-broker", broker.__version__)
            await client.call_tool("ensure_project", {"human_key": "/srv/wheel"})
            # register_agent and send_message run Lua scripts: the wheel must carry broker/scripts
            args = {"project_key": "/srv/wheel", "program": "p", "model": "m"}
            alice = (await client.call_tool("register_agent", args)).data
            bob = (await client.call_tool("register_agent", args)).data
            await client.call_tool(
                "send_message",
                {"project_key": "/srv/wheel", "sender_name": alice["name"], "to": [bob["name"]],
                 "subject": "from the wheel", "body_md": "hi"},
            )  # fmt: skip
            inbox = await client.call_tool("fetch_inbox", {"project_key": "/srv/wheel", "agent_name": bob["name"]})
        assert [m["subject"] for m in inbox.data] == ["from the wheel"]
