"""Log lines that can repeat many times a second (a failing entry, a Redis outage) at most once
per interval per kind, with a count of the ones held back, so a fault never floods the log."""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """``warning(kind, message, *args)`` logs the first line of a kind, then at most one per
    ``interval`` seconds, each saying how many of that kind were held back since the last."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log (or hold back) one line; True if it was written."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            message += f" ({held} more like this in the last {self.interval:g} s)"
        self.logger.warning(message, *args)
        return True
