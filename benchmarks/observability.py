"""What metrics and the call log cost on the hot path: the same broker with them on and off.

Two servers on one throwaway Redis, one with METRICS_ENABLED=true and LOG_CALLS=all (every
call counted, timed and logged), one with METRICS_ENABLED=false and LOG_CALLS=off; send_message
and fetch_inbox are timed interleaved, so machine noise hits both alike. The ratio on/off
should be 1.0 within noise. Run: ``python -m benchmarks.observability``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from fastmcp import Client

from benchmarks.common import bench_settings, interleaved, percentile, redis_url
from benchmarks.messaging import BODY, PROJECT
from broker.mcp.calllog import CallLog
from broker.server import build_server


async def run(rounds: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(url, Path(tmp))
        on = build_server(settings.model_copy(update={"metrics_enabled": True, "log_calls": "all"}))
        # every successful call logged, to a sink that writes nothing (the terminal is not measured)
        on.call_log = CallLog("json", "all", open("/dev/null", "w"))  # type: ignore[attr-defined]  # noqa: SIM115
        off = build_server(settings.model_copy(update={"metrics_enabled": False, "log_calls": "off"}))
        logging.getLogger("fastmcp").setLevel(logging.ERROR)
        async with Client(on) as with_metrics, Client(off) as without:
            await with_metrics.call_tool("ensure_project", {"human_key": PROJECT})
            names = []
            for _ in range(2):
                reg = await with_metrics.call_tool(
                    "register_agent", {"project_key": PROJECT, "program": "b", "model": "m"}
                )
                names.append(reg.data["name"])
            send = {"project_key": PROJECT, "sender_name": names[0], "to": [names[1]], "subject": "s", "body_md": BODY}
            fetch = {"project_key": PROJECT, "agent_name": names[1], "limit": 100, "include_bodies": True}
            for _ in range(150):
                await with_metrics.call_tool("send_message", send)
                await without.call_tool("send_message", send)
            sends = await interleaved(
                {"on": lambda: with_metrics.call_tool("send_message", send),
                 "off": lambda: without.call_tool("send_message", send)}, rounds)  # fmt: skip
            fetches = await interleaved(
                {"on": lambda: with_metrics.call_tool("fetch_inbox", fetch),
                 "off": lambda: without.call_tool("fetch_inbox", fetch)}, max(rounds // 3, 50))  # fmt: skip
        print(f"Redis: {source}; {rounds} sends, {max(rounds // 3, 50)} fetches per server, interleaved")
        for label, samples in (("send_message", sends), ("fetch_inbox (100, bodies)", fetches)):
            on50, off50 = percentile(samples["on"], 50) * 1e3, percentile(samples["off"], 50) * 1e3
            print(f"{label:<28} metrics+log on p50 {on50:7.3f} ms  off p50 {off50:7.3f} ms  ratio {on50 / off50:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000, help="samples per tool and server")
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
