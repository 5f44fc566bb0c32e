"""Broker errors. Tool errors reach clients as text, so the text carries code and remedy."""

from __future__ import annotations

from typing import Any

from fastmcp.exceptions import ToolError


class BrokerError(ToolError):
    """An error a client can act on: ``"<CODE>: <what is wrong>. <remedy>"``."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.code = code
        self.message = message
        self.data = data or {}
        super().__init__(f"{code}: {message}")
