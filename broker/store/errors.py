"""What goes wrong below the store, as the rest of the broker may name it without importing redis.

``StoreError`` is any failure Redis reports; ``StoreUnavailable`` the ones that mean Redis cannot
be reached for now (connection refused or lost, timeout, and on a Redis Cluster a failover or a
resharding in progress), which a retry a few seconds later gets past. redis-py raises two of
the cluster's outside ``StoreError``'s tree; ``StoreFailure`` catches them too.
``unexpected_error`` turns an exception no domain code expected into the coded error a client sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from redis.exceptions import ClusterError as _ClusterError
from redis.exceptions import ConnectionError as _ConnectionError
from redis.exceptions import RedisClusterUnreachableError as _ClusterUnreachable
from redis.exceptions import RedisError as StoreError
from redis.exceptions import ResponseError as StoreRefused
from redis.exceptions import SlotNotCoveredError as _SlotNotCovered
from redis.exceptions import TimeoutError as _TimeoutError
from redis.exceptions import TryAgainError as _TryAgain

if TYPE_CHECKING:
    from broker.errors import BrokerError

# What a Redis Cluster answers while a replica is being promoted or slots move, once the
# client's own retries (broker/store/clients.py) are spent: CLUSTERDOWN (ClusterDownError,
# MasterDownError), a redirection loop (ClusterError "TTL exhausted"), TRYAGAIN, a slot with no
# master in the client's map, no node reachable. None of them is the caller's fault.
_CLUSTER_UNAVAILABLE = (_ClusterError, _TryAgain, _SlotNotCovered, _ClusterUnreachable)
StoreUnavailable = (_ConnectionError, _TimeoutError, *_CLUSTER_UNAVAILABLE)
StoreFailure = (StoreError, _SlotNotCovered, _ClusterUnreachable)

__all__ = ["StoreError", "StoreFailure", "StoreRefused", "StoreUnavailable", "unexpected_error"]


def unexpected_error(exc: BaseException) -> BrokerError:
    """The coded error for an exception that escaped a tool (never a bare traceback)."""
    # not at import: BrokerError loads fastmcp, and the git hook imports this module
    from broker.errors import BrokerError

    if isinstance(exc, UnicodeError):
        return BrokerError("INVALID_ARGUMENT", f"Text is not valid Unicode ({exc.reason}); send UTF-8 text.")
    if isinstance(exc, _CLUSTER_UNAVAILABLE):
        return BrokerError(
            "CONNECTION_ERROR",
            f"Redis is unreachable: the Redis Cluster is failing over or moving slots ({exc}). Retry in a few "
            "seconds; if it keeps failing, check the cluster (redis-cli --cluster check <node>).",
        )
    if isinstance(exc, StoreUnavailable):
        return BrokerError(
            "CONNECTION_ERROR",
            f"Redis is unreachable ({exc}). Retry in a few seconds; if it keeps failing, check REDIS_URL "
            "and that the Redis server runs.",
        )
    if isinstance(exc, StoreError):
        return BrokerError("INTERNAL_ERROR", f"Redis refused an operation ({exc}). Please report this.")
    return BrokerError("UNHANDLED_EXCEPTION", f"Unexpected error ({type(exc).__name__}): {exc}. Please report this.")
