"""The operator credential: what the destructive, project-wide tools need under
``AGENT_AUTH=required`` (docs/security.md).

Joining a project (register_agent, create_agent_identity) needs no credential, so an agent's
token cannot be what allows deleting a project. The operator token is ``BROKER_ADMIN_TOKEN``
when set, else a random token the broker keeps in ``<STORAGE_ROOT>/admin-token`` (mode 0600;
``broker admin-token`` creates and prints it). Every broker process that shares the
STORAGE_ROOT reads the same file; brokers on other hosts need ``BROKER_ADMIN_TOKEN``.
The file is created by ``broker admin-token`` (a check never creates it: while it does not exist
nobody can know a token that would match).

The file is read on every check (a destructive call is rare), so replacing it (``broker
admin-token --rotate``) takes effect without a restart. Tokens are compared in constant time.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path

from broker.config import Settings
from broker.errors import BrokerError

TOKEN_FILE = "admin-token"
MAX_CHARS = 256


def token_path(settings: Settings) -> Path:
    return settings.storage_root / TOKEN_FILE


def _new_file(path: Path) -> Path:
    """A new file next to ``path`` holding a fresh token, created 0600 and fully written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_urlsafe(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return temp


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def operator_token(settings: Settings, create: bool = True) -> str | None:
    """The operator token: BROKER_ADMIN_TOKEN, else the token file's (created when missing and
    ``create``). The file appears complete or not at all (a hard link of a written file), and of
    two processes creating it at once the first link wins and both read it back."""
    if settings.broker_admin_token:
        return settings.broker_admin_token
    path = token_path(settings)
    found = _read(path)
    if found or not create:
        return found
    temp = _new_file(path)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink()
    return _read(path)


def rotate(settings: Settings) -> str:
    """Replace the token file's token (BROKER_ADMIN_TOKEN, when set, is not touched)."""
    path = token_path(settings)
    os.replace(_new_file(path), path)
    found = _read(path)
    assert found
    return found


def is_operator(settings: Settings, given: str | None) -> bool:
    """True when ``given`` is the operator token (constant-time comparison)."""
    if not given or len(given) > MAX_CHARS:
        return False
    # never created here: while no file exists nobody can know a token to match
    expected = operator_token(settings, create=False)
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())  # type: ignore[union-attr]


def presented(settings: Settings, operator_token_arg: str | None, registration_token: str | None) -> bool:
    """Whether the caller presented the operator credential: in ``operator_token``, or (for
    clients that know only the reference's arguments) in ``registration_token``. A wrong
    ``operator_token`` is refused rather than ignored."""
    if operator_token_arg:
        if not is_operator(settings, operator_token_arg):
            raise BrokerError(
                "AUTHENTICATION_FAILED",
                "Invalid operator_token. Pass the broker's operator token (BROKER_ADMIN_TOKEN, or what "
                "`broker admin-token` prints on the broker's host), or leave operator_token out.",
            )
        return True
    return is_operator(settings, registration_token)


def refusal(action: str, given_something: bool) -> BrokerError:
    """The error for a caller without the operator credential under AGENT_AUTH=required."""
    remedy = (
        f"{action} needs the broker's operator token under AGENT_AUTH=required: pass it as operator_token "
        "(or registration_token). The operator finds it in BROKER_ADMIN_TOKEN or with `broker admin-token` "
        "on the broker's host; an agent's registration_token is not enough."
    )
    if given_something:
        return BrokerError("OPERATOR_REQUIRED", f"The credential passed is not the operator token. {remedy}")
    return BrokerError("AUTHENTICATION_REQUIRED", remedy)
