"""rq job functions and the persistence worker (see workers/runner.py)."""
