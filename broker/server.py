"""The documented entry point: ``broker.server.build_server()`` returns the FastMCP server."""

from broker.mcp.server import build_server

__all__ = ["build_server"]
