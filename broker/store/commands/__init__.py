"""The typed commands of the store: one module per area, each function one Lua script or one
batch of reads, returning dataclasses or raising ``Refusal`` (docs/architecture.md)."""
