"""Helpers for the web view's browser tests: Debian's chromium under Playwright (never a
downloaded browser), and the checks a page must pass at any width."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
# What an injected payload would leave in the page if any of it got through as markup.
INJECTED = "script:not([src]), img, svg, iframe, object, embed, a[href^='javascript' i], a[href^='data' i], [onerror], [onload], [onclick], [onmouseover]"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        # --no-sandbox: test containers run as root, where chromium's sandbox cannot start
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


async def horizontal_overflow(page: Page) -> int:
    """How many pixels the page is wider than the window (0 when it fits)."""
    return int(await page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))
