"""What goes wrong below the store, as the rest of the broker may name it without importing redis.

``StoreError`` is any failure Redis reports; ``StoreUnavailable`` the ones that mean Redis cannot
be reached (connection refused or lost, timeout). ``unexpected_error`` turns an exception no
domain code expected into the coded error a client sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as _ConnectionError
from redis.exceptions import RedisError as StoreError
from redis.exceptions import ResponseError as StoreRefused
from redis.exceptions import TimeoutError as _TimeoutError

if TYPE_CHECKING:
    from broker.errors import BrokerError

StoreUnavailable = (_ConnectionError, _TimeoutError)

__all__ = ["StoreError", "StoreRefused", "StoreUnavailable", "unexpected_error"]


def unexpected_error(exc: BaseException) -> BrokerError:
    """The coded error for an exception that escaped a tool (never a bare traceback)."""
    # not at import: BrokerError loads fastmcp, and the git hook imports this module
    from broker.errors import BrokerError

    if isinstance(exc, UnicodeError):
        return BrokerError("INVALID_ARGUMENT", f"Text is not valid Unicode ({exc.reason}); send UTF-8 text.")
    if isinstance(exc, StoreUnavailable):
        return BrokerError(
            "CONNECTION_ERROR", f"Redis is unreachable ({exc}). Check REDIS_URL and that the Redis server runs."
        )
    if isinstance(exc, StoreError):
        return BrokerError("INTERNAL_ERROR", f"Redis refused an operation ({exc}). Please report this.")
    return BrokerError("UNHANDLED_EXCEPTION", f"Unexpected error ({type(exc).__name__}): {exc}. Please report this.")
