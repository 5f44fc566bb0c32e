"""The per-agent rate limit (docs/limits.md): a token bucket kept in Redis and run by the scripts
that act for the agent (``lib/ratelimit.lua``, inside ``send_message.lua`` and ``reserve.lua``), so
it holds across broker processes and costs no extra round trip. The per-client limit of HTTP
callers is the facade's (broker/mcp/limits.py).
"""

from __future__ import annotations

from broker.config import Settings
from broker.errors import BrokerError


def agent_spec(settings: Settings) -> str:
    """The per-agent bucket's spec for the scripts ("" when disabled)."""
    rate, burst = settings.agent_rate_limit_per_second, settings.agent_rate_limit_burst
    return f"{rate:g}:{burst}" if rate > 0 and burst > 0 else ""


def rate_limited(who: str, wait_ms: int, setting: str, rate: float, burst: int) -> BrokerError:
    seconds = max(wait_ms, 1) / 1000
    return BrokerError(
        "RATE_LIMITED",
        f"{who} is over its rate limit ({setting}={rate:g} per second, burst {burst}). "
        f"Retry after {seconds:.3f} seconds (retry_after={seconds:.3f}); spread calls out, "
        "or ask the operator to raise the limit.",
        {"retry_after": seconds},
    )


def agent_limited(settings: Settings, name: str, wait_ms: int) -> BrokerError:
    return rate_limited(
        f"Agent '{name}'",
        int(wait_ms),
        "AGENT_RATE_LIMIT_PER_SECOND",
        settings.agent_rate_limit_per_second,
        settings.agent_rate_limit_burst,
    )
