"""``python -m workers.alive``: the liveness check of a separate ``broker worker`` (compose.yaml's
worker healthcheck). Exit 0 when rq's worker registry holds a live worker of the persistence queue
on this host, 1 otherwise, with one line on stderr saying why.

rq drops a worker from its registry when it stops cleanly and lets the entry expire (worker TTL
plus a minute) when it dies; so "registered on this host" means a worker here is connected to
the right Redis and key prefix and is taking drain jobs.
"""

from __future__ import annotations

import socket
import sys

from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from broker.config import get_settings
from broker.store.clients import make_sync_client
from broker.store.keys import Keys


def live_workers_here() -> list[str]:
    """Names of this host's registered workers on the persistence queue (REDIS_URL required)."""
    settings = get_settings()
    if not settings.redis_url:
        raise SystemExit("workers.alive: REDIS_URL is not set; a separate `broker worker` needs it")
    connection = make_sync_client(settings.queue_url(settings.redis_url), decode_responses=False, timeout=5)
    try:
        queue = Queue(Keys(settings.redis_key_prefix).persist_queue, connection=connection, serializer=JSONSerializer)
        host = socket.gethostname()
        return [w.name for w in SimpleWorker.all(queue=queue, serializer=JSONSerializer) if w.hostname == host]
    finally:
        connection.close()


def main() -> int:
    try:
        names = live_workers_here()
    except Exception as exc:  # any failure to read the registry means we cannot vouch for the worker
        print(f"workers.alive: cannot read rq's worker registry ({exc})", file=sys.stderr)
        return 1
    if not names:
        print(f"workers.alive: no persistence worker registered on {socket.gethostname()}", file=sys.stderr)
        return 1
    print(f"workers.alive: {', '.join(names)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
