"""The web view in a real browser (Debian's chromium driven by Playwright): the pages load
without a console error (a Content-Security-Policy violation is one), mail sent through MCP
and acknowledgements and reservations show up live without a reload, the overseer's mail
reaches the agent, no XSS payload runs anywhere, and every page fits a phone's width.
One browser for the module."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from helpers import PROJECT, SLUG, Tools, make_settings
from playwright.async_api import Browser, ConsoleMessage, Page
from realtime_helpers import http_broker, local_tools
from shapes import payload
from web_helpers import INJECTED, chromium, horizontal_overflow

pytestmark = pytest.mark.asyncio(loop_scope="module")
LIVE_SECONDS = 1.0  # the bound: a change shows within a second of the tool call


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="module")
async def broker(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, Tools]]:
    settings = make_settings(redis_url, tmp_path)
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools:
        await tools.project()
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name)
        yield base, tools


async def open_page(browser: Browser, url: str, width: int = 1000) -> tuple[Page, list[str]]:
    """A page at ``url`` and the list its console errors and dialogs are collected in."""
    page = await browser.new_page(viewport={"width": width, "height": 800})
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    page.on("console", on_console)
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    await page.goto(url)
    return page, problems


async def shown_within(page: Page, selector: str, seconds: float) -> float:
    started = time.perf_counter()
    await page.wait_for_selector(selector, timeout=seconds * 5000)  # fail slowly, measure exactly
    return time.perf_counter() - started


async def test_mail_acks_and_reservations_appear_live(browser: Browser, broker: tuple[str, Tools]) -> None:
    base, tools = broker
    page, problems = await open_page(browser, f"{base}/mail/{SLUG}")
    await page.wait_for_selector("body[data-live='on']")
    await page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded

    sent = await tools.send("BlueLake", ["GreenCastle"], subject="Live subject", ack_required=True)
    message_id = payload(sent)["id"]
    assert await shown_within(page, f"[data-message-id='{message_id}']", LIVE_SECONDS) < LIVE_SECONDS
    assert await page.inner_text(f"[data-message-id='{message_id}'] .badge.ack") == "ack 0/1"

    await tools.call("acknowledge_message", project_key=PROJECT, agent_name="GreenCastle", message_id=message_id)
    assert await shown_within(page, f"[data-message-id='{message_id}'] .badge.ack.done", LIVE_SECONDS) < LIVE_SECONDS
    assert await page.evaluate("window.loadedOnce") is True

    board, board_problems = await open_page(browser, f"{base}/mail/{SLUG}/reservations")
    await board.wait_for_selector("body[data-live='on']")
    granted = await tools.call(
        "file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["src/**"], exclusive=True
    )
    first = granted["granted"][0]["id"]
    assert await shown_within(board, f"[data-reservation-id='{first}']", LIVE_SECONDS) < LIVE_SECONDS
    await tools.call(
        "file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=["src/app.py"], exclusive=True
    )
    assert await shown_within(board, f"tr.conflict[data-reservation-id='{first}']", LIVE_SECONDS) < LIVE_SECONDS
    await tools.call("release_file_reservations", project_key=PROJECT, agent_name="BlueLake")
    await board.wait_for_selector(f"[data-reservation-id='{first}']", state="detached", timeout=LIVE_SECONDS * 5000)
    assert problems == [] and board_problems == []


async def test_overseer_mail_reaches_the_agents_inbox(browser: Browser, broker: tuple[str, Tools]) -> None:
    base, tools = broker
    page, problems = await open_page(browser, f"{base}/mail/{SLUG}/overseer")
    await page.check("input[name='to'][value='GreenCastle']")
    await page.fill("input[name='subject']", "Please pause")
    await page.fill("textarea[name='body_md']", "Stop **now**.")
    await page.click("form.compose button[type='submit']")
    await page.wait_for_selector(".notice")
    assert "as the human overseer" in await page.inner_text(".notice")
    [mail] = await tools.inbox("GreenCastle", include_bodies=True)
    assert (mail["from"], mail["subject"], mail["importance"], mail["body_md"]) == (
        "HumanOverseer", "Please pause", "high", "Stop **now**."
    )  # fmt: skip
    assert await page.is_visible(f"[data-message-id='{mail['id']}']")
    assert problems == []


async def test_login_keeps_the_token_in_a_cookie_the_page_cannot_read(
    browser: Browser, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, HTTP_BEARER_TOKEN="web-login-token")
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools:
        await tools.project()
        page, problems = await open_page(browser, f"{base}/mail/{SLUG}")
        assert "/mail/_/login" in page.url
        await page.fill("input[name='token']", "not-it")
        await page.click(".login button[type='submit']")
        assert "not the broker's" in await page.inner_text("[role='alert']")
        problems.clear()  # the refused login answered 401, which the console reports
        await page.fill("input[name='token']", "web-login-token")
        await page.click(".login button[type='submit']")
        await page.wait_for_selector("body[data-live='on']")  # back on the inbox, its stream open
        assert page.url == f"{base}/mail/{SLUG}"
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script sees the token
        [cookie] = [c for c in await page.context.cookies() if c["name"] == "broker_web_auth"]
        assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
            True,
            True,
            "Strict",
            "/mail",
        )
        assert problems == []


PAYLOADS = [
    "<script>window.__xss=1;alert(1)</script>",
    '<img src=x onerror="window.__xss=1;alert(1)">',
    '<svg onload="window.__xss=1;alert(1)"><circle r=9 /></svg>',
    '"><a href="javascript:window.__xss=1">j</a>',
    '<iframe src="data:text/html,<script>parent.__xss=1</script>"></iframe>',
]
BODY = "\n\n".join(
    [*PAYLOADS, "[click](javascript:window.__xss=1)", "![x](data:image/svg+xml;base64,PHN2Zy8+)", "| n |\n|--:|\n| 1 |"]
)


async def seed_payloads(tools: Tools) -> dict[str, Any]:
    """Payloads in every free-text field the pages show; names, topics and thread ids are
    refused unless plain (their patterns), so they cannot carry one."""
    evil = PAYLOADS[1]
    await tools.agent("alpha-one", program=PAYLOADS[0], model=evil, task_description=PAYLOADS[2])
    sent = await tools.send(
        "alpha-one", ["BlueLake", "GreenCastle"], subject=" ".join(PAYLOADS[:3]), body_md=BODY, thread_id="XSS-1",
        topic="xss", importance="urgent", ack_required=True,
    )  # fmt: skip
    await tools.call(
        "file_reservation_paths", project_key=PROJECT, agent_name="alpha-one",
        paths=["docs/<img src=x onerror=alert(1)>.md"], exclusive=True, reason=" ".join(PAYLOADS),
    )  # fmt: skip
    return payload(sent)


async def test_no_payload_runs_and_pages_fit_a_phone(browser: Browser, broker: tuple[str, Tools]) -> None:
    base, tools = broker
    sent = await seed_payloads(tools)
    paths = [
        "/mail", f"/mail/{SLUG}", f"/mail/{SLUG}?importance=urgent", f"/mail/{SLUG}/agents",
        f"/mail/{SLUG}/agents/alpha-one", f"/mail/{SLUG}/threads/XSS-1", f"/mail/{SLUG}/reservations",
        f"/mail/{SLUG}/search?q=script", f"/mail/{SLUG}/overseer",
    ]  # fmt: skip
    page, problems = await open_page(browser, base + paths[0])
    for width in (1000, 390):  # a desktop window, then a phone's
        await page.set_viewport_size({"width": width, "height": 800})
        for path in paths:
            await page.goto(base + path, wait_until="domcontentloaded")
            assert await page.query_selector_all(INJECTED) == [], path
            assert await page.evaluate("window.__xss") is None, path
            assert problems == [], path
            assert await horizontal_overflow(page) <= 0, f"{path} is wider than {width}px"
    # the payloads are there, as text
    await page.goto(f"{base}/mail/{SLUG}/threads/XSS-1")
    assert PAYLOADS[0] in await page.inner_text(f"[data-message-id='{sent['id']}'] .body")
