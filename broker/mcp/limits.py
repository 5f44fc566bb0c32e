"""Rate limits (docs/limits.md): one caller must not take Redis, or this process, from the others.

* Per agent: a token bucket kept in Redis and run by the scripts that act for the agent
  (``lib/ratelimit.lua``, inside ``send_message.lua`` and ``reserve.lua``), so it holds across
  broker processes and costs no extra round trip. A reservation also pays for its matching work.
* Per client: a token bucket in this process per remote address of an HTTP call, checked before
  a tool runs. It covers what the agent bucket cannot see: calls that never prove an agent
  (wrong tokens, unknown names, registrations) and callers that spread over many agent names.
  Keyed by address, not MCP session: a caller opens a new session at will, not a new address.
  Calls without an HTTP request (stdio, in-process) have one client only and are not limited here.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from fastmcp.server.dependencies import get_http_request

from broker.identity.limits import rate_limited


class ClientLimiter:
    """Token buckets per remote address, in this process. Bounded: past ``max_clients`` the least
    recently seen address is forgotten (it starts again with a full bucket)."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def take(self, client: str, now: float | None = None) -> float:
        """Take one token for ``client``: 0.0 when admitted, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def pay(self, tokens: int) -> None:
        """Charge the current HTTP client ``tokens`` more for work its call did (debt bounded by
        one burst): the next calls wait until it is refilled. Nothing without an HTTP request."""
        if not self.enabled or tokens <= 0:
            return
        try:
            request = get_http_request()
        except RuntimeError:
            return
        client = request.client.host if request.client else "unknown"
        now = time.monotonic()
        held, at = self._buckets.pop(client, (float(self.burst), now))
        held = min(float(self.burst), held + (now - at) * self.rate)
        self._buckets[client] = (max(held - tokens, -float(self.burst)), now)

    def check(self) -> None:
        """Refuse the current tool call with RATE_LIMITED if its HTTP client is over its limit."""
        if not self.enabled:
            return
        try:
            request = get_http_request()
        except RuntimeError:
            return  # stdio or in-process: one client
        self.check_client(request.client.host if request.client else "unknown")

    def check_client(self, client: str) -> None:
        """Refuse with RATE_LIMITED if ``client`` (a remote address) is over its limit."""
        if not self.enabled:
            return
        wait = self.take(client)
        if wait:
            raise rate_limited(
                f"Client {client}", round(wait * 1000), "CLIENT_RATE_LIMIT_PER_SECOND", self.rate, self.burst
            )
