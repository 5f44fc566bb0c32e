"""rq job functions and the worker entry point (persistence lands with the durability issue)."""
