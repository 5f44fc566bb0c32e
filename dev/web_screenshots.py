"""Take the screenshots of docs/web.md: a throwaway Redis, a broker serving the web view, a
small made-up project, and Debian's chromium (through Playwright) saving each page as
docs/images/web-<page>.png, 1000 px wide.

Run: .venv/bin/python -m dev.web_screenshots
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from fastmcp import Client
from playwright.async_api import async_playwright

from broker.config import Settings
from broker.server import build_http_app, build_server
from broker.store.embedded import start_redis_server
from workers.runner import PersistenceWorker

PROJECT = "/home/dev/shop"
SLUG = "home-dev-shop"
OUT = Path(__file__).resolve().parent.parent / "docs" / "images"
WIDTH, HEIGHT = 1000, 640

PLAN = """Plan for the **checkout** rework:

1. `api/orders.py`: split `create_order` into validate / price / persist
2. the UI waits for the new `POST /orders` shape
3. tests: keep `tests/test_orders.py` green at each step

| step | owner | state |
|:-----|:------|------:|
| 1 | BlueLake | doing |
| 2 | GreenCastle | waiting |
"""


async def seed(client: Client) -> None:
    async def call(tool: str, **args: Any) -> Any:
        return (await client.call_tool(tool, args)).data

    await call("ensure_project", human_key=PROJECT)
    roles = {"BlueLake": "backend: orders API", "GreenCastle": "frontend: checkout UI", "RedStone": "tests and CI"}
    for name, task in roles.items():
        await call("register_agent", project_key=PROJECT, program="claude-code", model="opus-4", name=name,
                   task_description=task)  # fmt: skip

    async def send(sender: str, to: list[str], subject: str, body: str, **extra: Any) -> int:
        result = await call("send_message", project_key=PROJECT, sender_name=sender, to=to, subject=subject,
                            body_md=body, **extra)  # fmt: skip
        return int(result["deliveries"][0]["payload"]["id"])

    first = await send("BlueLake", ["GreenCastle", "RedStone"], "Checkout rework plan", PLAN, thread_id="CHK-12",
                       topic="checkout", ack_required=True)  # fmt: skip
    await send("GreenCastle", ["BlueLake"], "Re: Checkout rework plan", "Fine by me; I start on step 2 once "
               "`POST /orders` is merged.", thread_id="CHK-12", topic="checkout")  # fmt: skip
    await call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=first)
    await send("RedStone", ["BlueLake"], "CI red on main", "`tests/test_orders.py::test_total` fails since "
               "`a1b2c3`:\n\n```\nassert 1290 == 1300\n```", importance="urgent", topic="ci")  # fmt: skip
    await send("RedStone", ["BlueLake", "GreenCastle"], "Nightly run", "All 412 tests passed in 3m12s.", topic="ci")
    await call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=first)
    await call("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["api/orders.py", "api/**"],
               exclusive=True, reason="CHK-12 step 1")  # fmt: skip
    await call("file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=["ui/checkout/**"],
               exclusive=True, reason="CHK-12 step 2")  # fmt: skip
    await call("file_reservation_paths", project_key=PROJECT, agent_name="RedStone", paths=["tests/**"],
               exclusive=False, reason="fixing the red test")  # fmt: skip
    await call("file_reservation_paths", project_key=PROJECT, agent_name="RedStone", paths=["api/pricing.py"],
               exclusive=True, reason="rounding bug")  # fmt: skip


async def shoot(base: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pages = {
        "projects": "/mail",
        "inbox": f"/mail/{SLUG}",
        "agents": f"/mail/{SLUG}/agents",
        "agent": f"/mail/{SLUG}/agents/BlueLake",
        "thread": f"/mail/{SLUG}/threads/CHK-12",
        "reservations": f"/mail/{SLUG}/reservations",
        "search": f"/mail/{SLUG}/search?q=orders",
        "compose": f"/mail/{SLUG}/overseer",
    }
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        for name, path in pages.items():
            await page.goto(base + path)
            if await page.query_selector("body[data-events]"):
                await page.wait_for_selector("body[data-live='on']")  # the stream is up: "live" lit
            await page.screenshot(path=OUT / f"web-{name}.png")
        phone = await browser.new_page(viewport={"width": 390, "height": 760}, device_scale_factor=1)
        await phone.goto(f"{base}/mail/{SLUG}")
        await phone.wait_for_selector("body[data-live='on']")
        await phone.screenshot(path=OUT / "web-inbox-phone.png")
        await browser.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url = start_redis_server(root / "redis", appendonly=False)
        try:
            settings = Settings(REDIS_URL=url, STORAGE_ROOT=root / "storage", AGENT_AUTH="open")
            async with Client(build_server(settings)) as client:
                await seed(client)
            await asyncio.to_thread(PersistenceWorker(settings, url).run, burst=True)  # for search
            app, _mcp = build_http_app(settings, "127.0.0.1")
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.05)
            try:
                await shoot(f"http://127.0.0.1:{port}")
            finally:
                server.should_exit = True
                await task
        finally:
            proc.terminate()
            proc.wait(5)


if __name__ == "__main__":
    asyncio.run(main())
