"""Two agents coordinating through a running broker, with the official MCP Python SDK (``mcp``).

    .venv/bin/broker serve &                      # or `make serve`
    .venv/bin/python examples/two_agents.py       # --url, --project; HTTP_BEARER_TOKEN if set

Each agent has its own MCP session, as two coding agents would. The first ("blue") reserves the
files it is about to edit and mails the second ("green"), who is blocked in wait_for_mail until
the mail arrives; green then sees the reservation when it tries the same files, acknowledges,
and waits again until blue releases them and says so. Exits non-zero if any step goes otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


class Agent:
    """One MCP session acting for one agent: every call carries its name and token."""

    def __init__(self, session: ClientSession, project: str) -> None:
        self.session, self.project = session, project
        self.name, self.token = "", ""

    async def call(self, tool: str, **arguments: Any) -> Any:
        result = await self.session.call_tool(tool, arguments)
        if result.is_error:  # the broker's errors read "CODE: what happened. remedy"
            raise RuntimeError(f"{tool}: {result.content[0].text}")  # type: ignore[union-attr]
        data = result.structured_content or {}
        return data.get("result", data)  # a list result comes wrapped as {"result": [...]}

    async def register(self, task: str) -> None:
        # no name: the broker picks a free adjective+noun one (e.g. BlueLake), so reruns work
        me = await self.call(
            "register_agent", project_key=self.project, program="two_agents.py", model="example", task_description=task
        )
        self.name, self.token = me["name"], me["registration_token"]

    async def act(self, tool: str, **arguments: Any) -> Any:
        """A call as this agent (its name and registration token, required beyond loopback)."""
        return await self.call(
            tool, project_key=self.project, agent_name=self.name, registration_token=self.token, **arguments
        )

    async def send(self, tool: str, **arguments: Any) -> Any:
        """send_message / reply_message as this agent (they name it the sender)."""
        return await self.call(
            tool, project_key=self.project, sender_name=self.name, sender_token=self.token, **arguments
        )


@asynccontextmanager
async def connect(url: str, project: str, token: str | None) -> AsyncIterator[Agent]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # wait_for_mail holds a request open: allow reads well past its longest wait (120 s)
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield Agent(session, project)


async def run(url: str, project: str, token: str | None) -> None:
    async with connect(url, project, token) as blue, connect(url, project, token) as green:
        await blue.call("ensure_project", human_key=project)
        await blue.register("refactors the API module")
        await green.register("writes the API tests")
        print(f"registered {blue.name} and {green.name} in {project}")

        # GreenCastle waits for mail (a long poll) while BlueLake works.
        first_wait = asyncio.create_task(green.act("wait_for_mail", timeout_seconds=30, include_bodies=True))
        await asyncio.sleep(0.2)

        granted = await blue.act("file_reservation_paths", paths=["src/api/**"], ttl_seconds=600, reason="refactor")
        assert [g["path_pattern"] for g in granted["granted"]] == ["src/api/**"], granted
        print(f"{blue.name} reserved src/api/** exclusively")
        await blue.send(
            "send_message", to=[green.name], subject="Refactoring src/api", ack_required=True,
            body_md="I hold src/api/** for the next 10 minutes; I will mail you when I am done.",
        )  # fmt: skip

        woke = await asyncio.wait_for(first_wait, 30)
        assert not woke["timed_out"], woke
        (mail,) = woke["messages"]
        assert (mail["from"], mail["subject"]) == (blue.name, "Refactoring src/api"), mail
        print(f"{green.name} woke with mail #{mail['id']} from {mail['from']}: {mail['subject']}")

        attempt = await green.act("file_reservation_paths", paths=["src/api/test_routes.py"], ttl_seconds=600)
        holders = {c["holders"][0]["agent"] for c in attempt["conflicts"]} if attempt["conflicts"] else set()
        assert holders == {blue.name}, attempt
        print(f"{green.name} sees {blue.name}'s reservation on src/api/test_routes.py")
        await green.act("release_file_reservations", paths=["src/api/test_routes.py"])
        await green.act("acknowledge_message", message_id=mail["id"])

        # Wait for the next mail only: after the cursor of the previous wait.
        second_wait = asyncio.create_task(green.act("wait_for_mail", after_id=woke["cursor"], timeout_seconds=30))
        await asyncio.sleep(0.2)
        released = await blue.act("release_file_reservations", paths=["src/api/**"])
        assert released["released"] == 1, released
        await blue.send("reply_message", message_id=mail["id"], body_md="Done: src/api is yours.")
        done = await asyncio.wait_for(second_wait, 30)
        assert [m["from"] for m in done["messages"]] == [blue.name], done
        print(f"{green.name} woke again: {done['messages'][0]['subject']}")
    print("ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("AGENT_BROKER_URL", "http://127.0.0.1:8765/mcp/"))
    parser.add_argument("--project", default=os.getcwd(), help="project key: an absolute path (default: cwd)")
    args = parser.parse_args()
    asyncio.run(run(args.url, args.project, os.environ.get("HTTP_BEARER_TOKEN") or None))


if __name__ == "__main__":
    main()
