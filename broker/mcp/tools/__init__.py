"""The MCP tools, one module per domain. Each module's ``register(mcp, store, settings, backend)``
adds its tools to a server; ``broker.mcp.server.assemble`` calls them in order."""
