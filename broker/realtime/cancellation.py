"""Stopping endless loops when their task is cancelled, on Python 3.11 too.

Python 3.11's ``asyncio.wait_for`` returns its result and drops the cancellation when the two
arrive together (CPython gh-86296, fixed in 3.12), and redis-py wraps its sends in it. A task
cancelled during such a Redis call then carries on: a follower that goes back to waiting on its
doorbell never ends (measured: 15% of cancels that land inside a command on redis-py 8.2). The
task still counts the request (``Task.cancelling()``), so loops check it before they wait again.
Our own waits use ``asyncio.timeout``, which does not lose cancellations.
"""

from __future__ import annotations

import asyncio

# Loop turns given to an anyio cancel scope (MCP requests, SSE streams) to deliver its own
# cancellation again: it re-cancels every turn until the task leaves the scope.
REDELIVERY_TURNS = 3


async def stop_if_cancelled() -> None:
    """Raise the CancelledError that a library call swallowed, if this task was cancelled.

    Inside an anyio cancel scope the scope's own error must be the one raised: anyio lets a
    CancelledError it did not send escape the scope as a foreign cancel, which ends the whole
    MCP session. So first yield for the scope to send it, and raise a bare one only when no
    scope does (a plain ``Task.cancel``)."""
    task = asyncio.current_task()
    if task is None or not task.cancelling():
        return
    for _ in range(REDELIVERY_TURNS):
        await asyncio.sleep(0)
    raise asyncio.CancelledError
