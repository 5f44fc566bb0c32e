"""The web view's routes on the broker's HTTP app (``add_web_routes``, called by
broker/server.py): pages, the login form, static files and the project event streams.

Every response carries the security headers (broker/web/security.py) and a ``Server-Timing``
header with the time the broker spent on it. A request with ``X-Live-Fragment: 1`` (the pages'
script, after an event) gets only the page's live part.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files

from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from broker.config import Settings, is_loopback
from broker.errors import BrokerError
from broker.history.search import History
from broker.identity.projects import project_slug
from broker.persistence.index import Index
from broker.store.errors import StoreError
from broker.store.store import Store
from broker.web import pages
from broker.web.live import ProjectStreams
from broker.web.pages import Page
from broker.web.rendering import environment, render_block
from broker.web.security import (
    AUTH_COOKIE,
    CSRF_COOKIE,
    CSRF_FIELD,
    LOGIN_PATH,
    STATIC_PREFIX,
    WEB_PREFIX,
    add_security_headers,
    check_csrf,
    csrf_token,
    safe_next,
    set_cookie,
)

STATIC_TYPES = {
    "web.js": "text/javascript; charset=utf-8",
    "web.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
STATUS = {
    "NOT_FOUND": 404,
    "PROJECT_NOT_FOUND": 404,
    "CSRF_REFUSED": 403,
    "WEB_VIEW_CLOSED": 403,
    "RATE_LIMITED": 429,
    "TOO_MANY_STREAMS": 429,
}
MAX_FORM_BYTES = 256 * 1024

Handler = Callable[[Request], Awaitable[Page | Response]]


def add_web_routes(mcp: FastMCP, settings: Settings, host: str) -> None:
    """The web view's routes. It shows every agent's mail, so when the broker listens beyond
    loopback without HTTP_BEARER_TOKEN (anyone on the network could read it all), its pages
    refuse with WEB_VIEW_CLOSED, as agent auth turns required there (decision 7)."""
    store: Store = mcp.store  # type: ignore[attr-defined]
    closed = not settings.http_bearer_token and not is_loopback(host)
    history = History(store, Index.from_settings(settings))
    env = environment()
    streams = ProjectStreams(store)
    login_enabled = bool(settings.http_bearer_token)
    static = {name: (files("broker.web") / "static" / name).read_bytes() for name in STATIC_TYPES}

    def respond(request: Request, page: Page) -> Response:
        template = env.get_template(page.template)
        token, new = csrf_token(request)
        context = {
            **page.context,
            "csrf": token,
            "csrf_field": CSRF_FIELD,
            "path": request.url.path,
            "params": dict(request.query_params),
            "live": page.live,
            "login_enabled": login_enabled,
            "prefix": WEB_PREFIX,
        }
        if page.live and request.headers.get("x-live-fragment") == "1":
            html = render_block(template, "live", context)
        else:
            html = template.render(context)
        response = HTMLResponse(html, status_code=page.status)
        if new:
            set_cookie(response, CSRF_COOKIE, token)
        return response

    def route(path: str, methods: tuple[str, ...] = ("GET",)) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                started = time.perf_counter()
                try:
                    # a page is a request like a tool call: the client's bucket pays for it
                    mcp.client_limiter.check_client(request.client.host if request.client else "unknown")  # type: ignore[attr-defined]
                    if closed and not request.url.path.startswith(STATIC_PREFIX):
                        raise BrokerError(
                            "WEB_VIEW_CLOSED",
                            f"The web view shows every agent's mail, and this broker listens on {host} without "
                            "HTTP_BEARER_TOKEN. Set HTTP_BEARER_TOKEN (then log in with it here), or serve on 127.0.0.1.",
                        )
                    result = await handler(request)
                except BrokerError as exc:
                    result = Page("error.html", {"error": exc}, status=STATUS.get(exc.code, 400))
                except StoreError as exc:
                    result = Page("error.html", {"error": BrokerError("CONNECTION_ERROR", str(exc))}, status=503)
                response = respond(request, result) if isinstance(result, Page) else result
                add_security_headers(response)
                response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
                return response

            mcp.custom_route(path, methods=list(methods))(endpoint)
            return handler

        return register

    # -- the view's own files and the login form ------------------------------------------------
    @route(STATIC_PREFIX + "{name}")
    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_TYPES:
            raise BrokerError("NOT_FOUND", f"There is no file '{name}' here.")
        response = Response(static[name], media_type=STATIC_TYPES[name])
        return response

    @route(LOGIN_PATH, ("GET", "POST"))
    async def login(request: Request) -> Page | Response:
        target = safe_next(request.query_params.get("next"))
        if not login_enabled:
            return RedirectResponse(target, status_code=303)
        if request.method == "GET":
            return Page("login.html", {"next": target})
        form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
        given = str(form.get("token", ""))
        if not hmac.compare_digest(given.encode(), settings.http_bearer_token.encode()):
            return Page("login.html", {"next": target, "failed": True}, status=401)
        response = RedirectResponse(target, status_code=303)
        set_cookie(response, AUTH_COOKIE, settings.http_bearer_token)
        return response

    @route(WEB_PREFIX + "/_/logout", ("POST",))
    async def logout(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=4, max_part_size=4096)
        check_csrf(request, str(form.get(CSRF_FIELD, "")))
        response = RedirectResponse(LOGIN_PATH if login_enabled else WEB_PREFIX, status_code=303)
        response.delete_cookie(AUTH_COOKIE, path=WEB_PREFIX, secure=True, httponly=True, samesite="strict")
        return response

    # -- pages ------------------------------------------------------------------------------------
    @route(WEB_PREFIX)
    async def projects(request: Request) -> Page:
        return await pages.projects_page(store, request)

    @route(WEB_PREFIX + "/")
    async def projects_slash(request: Request) -> Response:
        return RedirectResponse(WEB_PREFIX, status_code=308)

    @route(WEB_PREFIX + "/{slug}")
    async def inbox(request: Request) -> Page:
        return await pages.inbox_page(store, request)

    @route(WEB_PREFIX + "/{slug}/agents")
    async def agents(request: Request) -> Page:
        return await pages.agents_page(store, request)

    @route(WEB_PREFIX + "/{slug}/agents/{name}")
    async def agent(request: Request) -> Page:
        return await pages.agent_page(store, request)

    @route(WEB_PREFIX + "/{slug}/threads/{thread_id}")
    async def thread(request: Request) -> Page:
        return await pages.thread_page(store, request)

    @route(WEB_PREFIX + "/{slug}/reservations")
    async def reservations(request: Request) -> Page:
        return await pages.reservations_page(store, request)

    @route(WEB_PREFIX + "/{slug}/search")
    async def search(request: Request) -> Page:
        return await pages.search_page(store, history, request)

    @route(WEB_PREFIX + "/{slug}/overseer")
    async def compose(request: Request) -> Page:
        return await pages.compose_page(store, request)

    @route(WEB_PREFIX + "/{slug}/overseer/send", ("POST",))
    async def send(request: Request) -> Page | Response:
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            raise BrokerError("INVALID_ARGUMENT", "The form is too large; shorten the message.")
        form = await request.form(max_files=0, max_fields=1100, max_part_size=MAX_FORM_BYTES)
        check_csrf(request, str(form.get(CSRF_FIELD, "")))
        fields = {
            "to": [str(name) for name in form.getlist("to")],
            "subject": str(form.get("subject", "")),
            "body_md": str(form.get("body_md", "")),
        }
        try:
            message_id = await pages.send_overseer_mail(store, request, fields)
        except BrokerError as problem:
            if problem.code == "CSRF_REFUSED":
                raise
            page = await pages.compose_page(store, request, problem)
            page.context["form"] = fields
            return page
        slug = request.path_params["slug"]
        return RedirectResponse(f"{WEB_PREFIX}/{slug}?sent={message_id}", status_code=303)

    @route(WEB_PREFIX + "/{slug}/_/events")
    async def events(request: Request) -> Response:
        slug = await project_slug(store, request.path_params["slug"])
        await pages.project_agents(store, slug)  # a refusal when there is no such project
        if streams.full(slug):
            raise BrokerError("TOO_MANY_STREAMS", "Too many pages of this project are open on this broker; close some.")
        return streams.response(slug)
