"""Redis-backed realtime coordination broker for AI coding agents."""

__version__ = "0.1.0"
