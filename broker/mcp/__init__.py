"""broker/mcp"""
