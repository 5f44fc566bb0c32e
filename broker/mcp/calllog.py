"""One log line per tool call, written off the event loop.

A failed call is one line (tool, agent, project, code, duration); a traceback is added only
for an unexpected error (UNHANDLED_EXCEPTION, INTERNAL_ERROR), and it is formatted on the
writer thread, not on the event loop. LOG_CALLS=all logs successful calls too; LOG_FORMAT=json
writes each line as one JSON object. FastMCP's own "Error calling tool" records (which render
a highlighted traceback for every Redis error, on the loop) are dropped: this module says it
once, cheaply.

Writing goes through a QueueHandler: the loop only puts a record on a queue; a listener thread
formats and writes it, so a slow terminal or a flood of failures during a Redis outage cannot
stall the broker.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any

from broker.mcp.usage import argument_field

LOGGER_NAME = "broker.calls"
UNEXPECTED_CODES = frozenset({"UNHANDLED_EXCEPTION", "INTERNAL_ERROR"})
_FASTMCP_NOISE = ("Error calling tool", "Error reading resource", "Invalid arguments for tool")


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Puts the record itself on the queue: the stock handler formats it (traceback included)
    in the calling thread, which here is the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        fields = getattr(record, "call", None)
        if fields is not None:
            line.update(fields)
        else:
            line["logger"] = record.name
            line["message"] = record.getMessage()
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "call", None)
        if fields is not None:
            record.message = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        return super().formatMessage(record)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' ="\n')) else text


class _DropFastMCPToolErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_FASTMCP_NOISE))


class CallLog:
    """The call logger of one process (configured once; servers built later share it)."""

    def __init__(self, fmt: str = "text", log_calls: str = "errors", stream: Any = None) -> None:
        self.all_calls = log_calls == "all"
        self.enabled = log_calls != "off"
        # A logger of its own, outside logging's global tree: each call log (one per settings,
        # and the tests') keeps its own handlers, and nothing else's config reaches it.
        self.logger = logging.Logger(LOGGER_NAME, logging.INFO)
        writer = logging.StreamHandler(stream or sys.stderr)
        writer.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.logger.addHandler(_DeferredQueueHandler(records))
        self.listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
        self.listener.start()
        self._stopped = False
        atexit.register(self.stop)
        fastmcp_server = logging.getLogger("fastmcp.server.server")
        if not any(isinstance(f, _DropFastMCPToolErrors) for f in fastmcp_server.filters):
            fastmcp_server.addFilter(_DropFastMCPToolErrors())

    def call(
        self,
        tool: str,
        arguments: dict[str, Any] | None,
        code: str | None,
        seconds: float,
        exc: BaseException | None = None,
    ) -> None:
        """Log one call: always when it failed, and every call under LOG_CALLS=all."""
        if not self.enabled or (code is None and not self.all_calls):
            return
        fields = {
            "event": "tool_call",
            "tool": tool,
            "agent": argument_field(arguments, "agent_name", "sender_name", "from_agent", "requester", "name"),
            "project": argument_field(arguments, "project_key", "human_key"),
            "code": code or "OK",
            "duration_ms": round(seconds * 1000, 2),
        }
        unexpected = code in UNEXPECTED_CODES and exc is not None
        level = logging.ERROR if unexpected else logging.WARNING if code else logging.INFO
        exc_info = (type(exc), exc, exc.__traceback__) if unexpected and exc is not None else None
        self.logger.log(level, "tool_call", extra={"call": fields}, exc_info=exc_info)

    def stop(self) -> None:
        """Write what is queued and end the writer thread (idempotent)."""
        if not self._stopped:
            self._stopped = True
            atexit.unregister(self.stop)
            self.listener.stop()


_current: CallLog | None = None
_current_config: tuple[str, str] | None = None


def call_log(fmt: str, log_calls: str) -> CallLog:
    """This process's call log for the given settings (re-made if they change)."""
    global _current, _current_config
    if _current is None or _current_config != (fmt, log_calls):
        if _current is not None:
            _current.stop()
        _current, _current_config = CallLog(fmt, log_calls), (fmt, log_calls)
    return _current
