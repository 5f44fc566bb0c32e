"""What keeps the web view safe to open: the login cookie (the HTTP bearer token, kept where
page scripts cannot read it), the CSRF token of forms that change something, and the headers
every page carries (a strict Content-Security-Policy first)."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from broker.errors import BrokerError

WEB_PREFIX = "/mail"
LOGIN_PATH = WEB_PREFIX + "/_/login"
STATIC_PREFIX = WEB_PREFIX + "/_/static/"
AUTH_COOKIE = "broker_web_auth"
CSRF_COOKIE = "broker_web_csrf"
CSRF_FIELD = "csrf_token"
# Scripts only from our own files (no inline script, no eval), styles likewise, nothing framed,
# no form posting elsewhere, no plugin; images only from here (a mail body cannot beacon out).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def add_security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    """A cookie only this view's paths get back, never sent from another site's page, never
    readable by a script, only over HTTPS (browsers count http://localhost as secure)."""
    response.set_cookie(name, value, max_age=max_age, path=WEB_PREFIX, secure=True, httponly=True, samesite="strict")


def csrf_token(request: Request) -> tuple[str, bool]:
    """The browser's CSRF token (double-submit: the cookie and the form field must agree), and
    whether it is new (then the response sets the cookie)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    if len(current) >= 32:
        return current, False
    return secrets.token_urlsafe(32), True


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a form post whose token does not match the cookie, or that another origin sent."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise BrokerError(
            "CSRF_REFUSED", "This form was posted from another site; open the page here and send it again."
        )
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise BrokerError(
            "CSRF_REFUSED",
            "The form's security token is missing or stale; reload the page and send the form again.",
        )


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this view only (no open redirect)."""
    if target and target.startswith(WEB_PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return WEB_PREFIX
