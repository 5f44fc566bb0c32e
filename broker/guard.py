"""The pre-commit hook's entry point: installed hooks run ``python -m broker.guard check``.

Hooks live on disk in users' repositories, so the name they call must not move when the package
layout does; the guard itself is broker/reservations/guard.py. Nothing heavy is imported here
(no fastmcp): the hook runs on every commit.
"""

from broker.reservations.guard import main

if __name__ == "__main__":
    raise SystemExit(main())
