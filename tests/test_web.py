"""The web view over HTTP, without a browser: login and its cookie, CSRF refusals, the security
headers, the unified inbox's pages and filters, and the overseer's mail (tests/test_web_browser.py
drives the same pages in chromium)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from helpers import PROJECT, SLUG, Tools, make_settings
from realtime_helpers import http_broker, local_tools
from shapes import payload

from broker.server import build_http_app
from broker.web import live
from broker.web.rendering import markdown_html
from broker.web.security import CONTENT_SECURITY_POLICY

TOKEN = "web-view-bearer"
HTML = {"accept": "text/html"}


def message_ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'data-message-id="(\d+)"', html)]


def csrf_of(response: httpx.Response) -> tuple[str, str]:
    """(the form's token, the Cookie header carrying it): the cookie is Secure, so an http://
    client keeps it only when told (browsers count 127.0.0.1 as secure)."""
    field = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert field is not None
    return field.group(1), f"broker_web_csrf={response.cookies['broker_web_csrf']}"


async def test_login_form_sets_a_secure_http_only_strict_cookie(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, tmp_path, HTTP_BEARER_TOKEN=TOKEN)
    async with http_broker(settings) as (base, _store), httpx.AsyncClient(base_url=base) as http:
        # a page without credentials sends the browser to the login form, keeping where it was going
        away = await http.get(f"/mail/{SLUG}?agent=BlueLake", headers=HTML)
        assert away.status_code == 303
        assert away.headers["location"].startswith("/mail/_/login?next=%2Fmail%2Ftmp-concurrent-test%3Fagent")
        assert (await http.get("/mail")).status_code == 401  # not a browser page: a plain 401
        form = await http.get("/mail/_/login")
        assert form.status_code == 200 and 'type="password"' in form.text
        assert (await http.get("/mail/_/static/web.css")).status_code == 200  # the form's styles

        wrong = await http.post("/mail/_/login", data={"token": "guess"})
        assert wrong.status_code == 401 and "broker_web_auth" not in wrong.headers.get("set-cookie", "")
        right = await http.post("/mail/_/login?next=/mail/x", data={"token": TOKEN})
        assert (right.status_code, right.headers["location"]) == (303, "/mail/x")
        cookie = right.headers["set-cookie"]
        assert cookie.startswith(f"broker_web_auth={TOKEN};")
        for attribute in ("HttpOnly", "Path=/mail", "SameSite=strict", "Secure"):
            assert attribute.lower() in cookie.lower()
        # nowhere else than this view: an open redirect is refused
        elsewhere = await http.post("/mail/_/login?next=//evil.example/", data={"token": TOKEN})
        assert elsewhere.headers["location"] == "/mail"

        with_cookie = {"cookie": f"broker_web_auth={TOKEN}", **HTML}
        assert (await http.get("/mail", headers=with_cookie)).status_code == 200
        assert (await http.get("/mail", headers={"authorization": f"Bearer {TOKEN}"})).status_code == 200
        # the cookie opens the web view only, not the MCP endpoint
        mcp = await http.post("/mcp/", headers={"cookie": f"broker_web_auth={TOKEN}"}, json={})
        assert mcp.status_code == 401


async def test_every_page_carries_a_strict_content_security_policy(
    tools: Tools, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path)
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools, httpx.AsyncClient(base_url=base) as http:  # fmt: skip
        await tools.project()
        await tools.agent("BlueLake")
        for path in ("/mail", f"/mail/{SLUG}", f"/mail/{SLUG}/agents", f"/mail/{SLUG}/reservations",
                     f"/mail/{SLUG}/search?q=x", f"/mail/{SLUG}/overseer", "/mail/nope"):  # fmt: skip
            response = await http.get(path)
            assert response.status_code == (404 if path == "/mail/nope" else 200), path
            policy = response.headers["content-security-policy"]
            assert policy == CONTENT_SECURITY_POLICY
            assert "script-src 'self';" in policy and "unsafe" not in policy
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["server-timing"].startswith("app;dur=")
            assert "<script>" not in response.text  # no inline script: the only one is web.js


async def test_compose_refuses_a_post_without_the_matching_csrf_token(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path)
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools, httpx.AsyncClient(base_url=base) as http:  # fmt: skip
        await tools.project()
        await tools.agent("GreenCastle")
        token, cookie = csrf_of(await http.get(f"/mail/{SLUG}/overseer"))
        mail = {"to": "GreenCastle", "subject": "Stop", "body_md": "now"}
        attempts = [
            ({}, {**mail}),  # no cookie, no field
            ({"cookie": cookie}, {**mail}),  # cookie, no field
            ({}, {**mail, "csrf_token": token}),  # field, no cookie
            ({"cookie": cookie}, {**mail, "csrf_token": token[:-2] + "xx"}),  # not the same
            ({"cookie": cookie, "origin": "https://evil.example"}, {**mail, "csrf_token": token}),  # another site
        ]
        for headers, form in attempts:
            refused = await http.post(f"/mail/{SLUG}/overseer/send", headers=headers, data=form)
            assert refused.status_code == 403 and "CSRF_REFUSED" in refused.text
        assert await tools.inbox("GreenCastle") == []
        sent = await http.post(
            f"/mail/{SLUG}/overseer/send", headers={"cookie": cookie}, data={**mail, "csrf_token": token}
        )
        assert sent.status_code == 303
        assert [m["subject"] for m in await tools.inbox("GreenCastle")] == ["Stop"]


async def test_overseer_mail_passes_contact_policy_and_wakes_a_waiting_agent(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path)
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools, httpx.AsyncClient(base_url=base) as http:  # fmt: skip
        await tools.project()
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name)
        await tools.call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="block_all")
        assert "CONTACT_BLOCKED" in await tools.error(
            "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="hi", body_md="x"
        )
        waiting = asyncio.create_task(
            tools.call("wait_for_mail", project_key=PROJECT, agent_name="BlueLake", timeout_seconds=10)
        )
        token, cookie = csrf_of(await http.get(f"/mail/{SLUG}/overseer"))
        form = {
            "to": ["GreenCastle", "BlueLake"],
            "subject": "Freeze main",
            "body_md": "**Stop** merging.",
            "csrf_token": token,
        }
        sent = await http.post(f"/mail/{SLUG}/overseer/send", headers={"cookie": cookie}, data=form)
        assert sent.status_code == 303
        woke = await asyncio.wait_for(waiting, 10)
        assert [(m["from"], m["subject"], m["importance"]) for m in woke["messages"]] == [
            ("HumanOverseer", "Freeze main", "high")
        ]
        [got] = await tools.inbox("GreenCastle", include_bodies=True)
        assert (got["from"], got["importance"], got["body_md"]) == ("HumanOverseer", "high", "**Stop** merging.")
        # the overseer is an agent of the project that no agent can register as (the name is
        # not an adjective+noun one: it is coerced to a generated name, or refused under strict)
        other = await tools.call("register_agent", project_key=PROJECT, program="x", model="y", name="HumanOverseer")
        assert other["name"] != "HumanOverseer"
        # a bad form comes back with the problem and what was typed
        again, cookie = csrf_of(await http.get(f"/mail/{SLUG}/overseer"))
        empty = await http.post(
            f"/mail/{SLUG}/overseer/send", headers={"cookie": cookie},
            data={"subject": "kept <b>", "body_md": "", "csrf_token": again},
        )  # fmt: skip
        assert empty.status_code == 400 and "Choose at least one agent" in empty.text
        assert 'value="kept &lt;b&gt;"' in empty.text


async def test_unified_inbox_pages_newest_first_and_filters(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path)
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools, httpx.AsyncClient(base_url=base) as http:  # fmt: skip
        await tools.project()
        for name in ("BlueLake", "GreenCastle", "alpha-one"):
            await tools.agent(name)
        sent: list[tuple[int, str, str, str]] = []  # (id, to, importance, topic), oldest first
        plan = [
            (["GreenCastle"], "normal", ""), (["GreenCastle", "alpha-one"], "high", "build"),
            (["alpha-one"], "urgent", ""), (["GreenCastle"], "low", "build"), (["alpha-one", "GreenCastle"], "normal", ""),
            (["GreenCastle"], "high", "deploy"), (["alpha-one"], "normal", "build"),
        ]  # fmt: skip
        for i, (to, importance, topic) in enumerate(plan):
            extra = {"topic": topic} if topic else {}
            result = await tools.send("BlueLake", to, subject=f"m{i}", importance=importance, **extra)
            sent.append((payload(result)["id"], ",".join(to), importance, topic))
        newest_first = [s[0] for s in reversed(sent)]

        seen: list[int] = []
        url = f"/mail/{SLUG}?limit=3"
        while url:
            page = await http.get(url)
            assert page.status_code == 200
            seen += message_ids(page.text)
            older = re.search(r'rel="next" href="([^"]+)"', page.text)
            url = f"/mail/{SLUG}" + older.group(1).replace("&amp;", "&") if older else ""
        assert seen == newest_first  # each message once, even the ones sent to two agents

        async def ids(query: str) -> list[int]:
            return message_ids((await http.get(f"/mail/{SLUG}?{query}")).text)

        assert await ids("agent=alpha-one") == [s[0] for s in reversed(sent) if "alpha-one" in s[1]]
        assert await ids("importance=high") == [s[0] for s in reversed(sent) if s[2] == "high"]
        assert await ids("topic=BUILD") == [s[0] for s in reversed(sent) if s[3] == "build"]
        await tools.call("mark_message_read", project_key=PROJECT, agent_name="GreenCastle", message_id=sent[5][0])
        unread_green = [s[0] for s in reversed(sent) if "GreenCastle" in s[1] and s[0] != sent[5][0]]
        assert await ids("agent=GreenCastle&unread=true") == unread_green
        assert await ids("agent=GreenCastle&importance=high&topic=deploy") == [sent[5][0]]
        bad = await http.get(f"/mail/{SLUG}?importance=huge")
        assert bad.status_code == 400 and "importance" in bad.text


def test_markdown_is_rendered_then_sanitised() -> None:
    corpus = (
        '# Title\n\n<script>alert(1)</script>\n\n<img src=x onerror="alert(1)">\n\n'
        "[click](javascript:alert(1)) [data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)\n\n"
        '<svg onload="alert(1)"><circle/></svg> <a href="https://ok.example" onclick="alert(1)">ok</a>\n\n'
        "| a | b |\n|:-|-:|\n| 1 | 2 |\n\n**bold** `code` [ok](https://ok.example)"
    )
    html = str(markdown_html(corpus))
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html and "<table>" in html
    assert "style=" not in html  # the CSP refuses inline styles: an aligned column's would be an error
    elements = Elements()
    elements.feed(html)
    assert {"script", "img", "svg", "circle"}.isdisjoint(tag for tag, _ in elements.found)
    for _tag, attributes in elements.found:
        for name, value in attributes:
            assert not name.startswith("on"), name
            assert not (value or "").lower().startswith(("javascript:", "data:")), value
    assert ("a", [("href", "https://ok.example"), ("rel", "noopener noreferrer nofollow")]) in elements.found


class Elements(HTMLParser):
    """The elements of an HTML text with their attributes, as a browser would build them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


async def test_reservations_board_marks_conflicts_and_stale_holders(redis_url: str, tmp_path: Path) -> None:
    # no grace at all: every holder that has been quiet for a second counts as stale
    settings = make_settings(
        redis_url, tmp_path, FILE_RESERVATION_INACTIVITY_SECONDS=0, FILE_RESERVATION_ACTIVITY_GRACE_SECONDS=0
    )
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools, httpx.AsyncClient(base_url=base) as http:  # fmt: skip
        await tools.project()
        for name in ("BlueLake", "GreenCastle", "alpha-one"):
            await tools.agent(name)

        async def reserve(agent: str, pattern: str, exclusive: bool) -> int:
            granted = await tools.call(
                "file_reservation_paths", project_key=PROJECT, agent_name=agent, paths=[pattern], exclusive=exclusive
            )
            return int(granted["granted"][0]["id"])

        wide = await reserve("BlueLake", "src/**", True)
        inside = await reserve("GreenCastle", "src/app.py", True)
        shared = await reserve("alpha-one", "docs/*.md", False)
        board = (await http.get(f"/mail/{SLUG}/reservations")).text
        by_id = {
            int(rid): classes.split()
            for classes, rid in re.findall(r'<tr class="([^"]*)" data-reservation-id="(\d+)"', board)
        }
        assert "conflict" in by_id[wide] and "conflict" in by_id[inside]
        assert "conflict" not in by_id[shared]
        assert "conflicts with GreenCastle's src/app.py" in board
        assert set(by_id) == {wide, inside, shared}  # every live reservation is listed
        assert all("stale" in classes for classes in by_id.values())  # nobody acted within the (zero) grace
        assert board.count("stale holder") == 3


async def test_the_view_is_closed_beyond_loopback_without_a_bearer_token(redis_url: str, tmp_path: Path) -> None:
    """Every agent's mail is on these pages: on a network address they need HTTP_BEARER_TOKEN."""
    for token, status in (("", 403), (TOKEN, 200)):
        settings = make_settings(redis_url, tmp_path, HTTP_BEARER_TOKEN=token)
        app, mcp = build_http_app(settings, "0.0.0.0")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://broker") as http:
            page = await http.get("/mail", headers={"authorization": f"Bearer {TOKEN}"} if token else {})
        await mcp.store.close()  # type: ignore[attr-defined]
        assert page.status_code == status
        if not token:
            assert "WEB_VIEW_CLOSED" in page.text and "HTTP_BEARER_TOKEN" in page.text


@pytest.fixture(
    params=[
        pytest.param("redis_url", id="redis", marks=pytest.mark.integration),
        pytest.param("cluster_url", id="cluster", marks=[pytest.mark.integration, pytest.mark.cluster]),
    ]
)
def real_redis(request: pytest.FixtureRequest) -> str:
    """A real Redis: the session's standalone one, or its 3-master cluster (shard channels)."""
    return str(request.getfixturevalue(request.param))


async def event_names(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The names of a page stream's events (their data is only the name again)."""
    async for line in lines:
        if line.startswith("event:"):
            yield line.partition(":")[2].strip()


async def test_receipts_reservations_and_agents_reach_the_page_stream_at_once(
    real_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read, acknowledgement, grant, renewal, release, registration and retirement made by
    another broker process (its own connections) reaches an open page's stream as a "state" event
    within a second, with the digest poll slowed to a minute so that only the script's published
    change event can bring it; agents' waiters do not wake for those events."""
    monkeypatch.setattr(live, "STATE_CHECK_SECONDS", 60.0)
    settings = make_settings(
        real_redis, tmp_path, FILE_RESERVATION_INACTIVITY_SECONDS=0, FILE_RESERVATION_ACTIVITY_GRACE_SECONDS=0
    )
    async with http_broker(settings) as (base, store), local_tools(settings) as tools, httpx.AsyncClient(base_url=base) as http:  # fmt: skip
        await tools.project()
        for name in ("BlueLake", "GreenCastle"):
            await tools.agent(name)
        first = payload(await tools.send("BlueLake", ["GreenCastle"], subject="one", ack_required=True))["id"]
        second = payload(await tools.send("BlueLake", ["GreenCastle"], subject="two", ack_required=True))["id"]
        changes: list[tuple[str, str]] = []
        store.doorbell.change_observers.append(lambda slug, change: changes.append((slug, change)))
        at = {"project_key": PROJECT, "agent_name": "GreenCastle"}
        steps = [
            ("mark_message_read", {**at, "message_id": first}, "receipts"),
            ("acknowledge_message", {**at, "message_id": second}, "receipts"),
            ("file_reservation_paths", {**at, "agent_name": "BlueLake", "paths": ["src/**"]}, "reservations"),
            ("renew_file_reservations", {**at, "agent_name": "BlueLake", "extend_seconds": 600}, "reservations"),
            ("release_file_reservations", {**at, "agent_name": "BlueLake"}, "reservations"),
            ("register_agent", {"project_key": PROJECT, "program": "p", "model": "m", "name": "RedStone"}, "agents"),
            ("retire_agent", {"project_key": PROJECT, "agent_name": "RedStone"}, "agents"),
        ]
        async with http.stream("GET", f"/mail/{SLUG}/_/events", timeout=10) as response:
            names = event_names(response.aiter_lines())
            assert await asyncio.wait_for(anext(names), 5) == "ready"
            with store.doorbell.waiter(SLUG, "greencastle") as waiter:
                for tool, arguments, change in steps:
                    await tools.call(tool, **arguments)
                    called = time.monotonic()
                    assert await asyncio.wait_for(anext(names), 1.0) == "state", tool
                    assert time.monotonic() - called < 1.0, tool
                    assert changes == [(SLUG, change)], tool
                    changes.clear()
                # what changes nothing publishes nothing: a second read of a read message (the
                # grant after it publishes on the same channel, so its event comes after any other)
                await tools.call("mark_message_read", **at, message_id=first)
                held = await tools.call("file_reservation_paths", **{**at, "agent_name": "BlueLake", "paths": ["x.py"]})
                assert await asyncio.wait_for(anext(names), 1.0) == "state"
                assert changes == [(SLUG, "reservations")]
                changes.clear()
                # the stale holder's reservation, forced free by another agent (who then mails it)
                await tools.call("force_release_file_reservation", **at, file_reservation_id=held["granted"][0]["id"])
                deadline = time.monotonic() + 1.0
                while not changes and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert changes == [(SLUG, "reservations")]
                assert not waiter.ring.is_set()  # no change event woke GreenCastle's wait_for_mail


async def test_a_reservation_that_expires_leaves_the_open_page(redis_url: str, tmp_path: Path) -> None:
    """An expiry by time publishes nothing: the stream's digest poll announces it, and the board
    then lists the reservation no more."""
    settings = make_settings(redis_url, tmp_path, FILE_RESERVATION_MIN_TTL_SECONDS=1)
    async with http_broker(settings) as (base, _store), local_tools(settings) as tools, httpx.AsyncClient(base_url=base) as http:  # fmt: skip
        await tools.project()
        await tools.agent("BlueLake")
        granted = await tools.call(
            "file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["src/app.py"], ttl_seconds=2
        )
        rid = granted["granted"][0]["id"]
        expires = time.monotonic() + 2
        assert f'data-reservation-id="{rid}"' in (await http.get(f"/mail/{SLUG}/reservations")).text
        async with http.stream("GET", f"/mail/{SLUG}/_/events", timeout=10) as response:
            names = event_names(response.aiter_lines())
            assert await asyncio.wait_for(anext(names), 5) == "ready"
            assert await asyncio.wait_for(anext(names), 5) == "state"
            assert time.monotonic() > expires - 0.1  # at the expiry, not before
        assert f'data-reservation-id="{rid}"' not in (await http.get(f"/mail/{SLUG}/reservations")).text
