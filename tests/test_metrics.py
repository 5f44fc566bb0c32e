"""Prometheus /metrics and the per-call log, as an operator sees them: scraped text that
prometheus_client's own parser reads, the series the docs promise, the bearer rule, and one
log line per failed call (a traceback only for the unexpected)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastmcp import Client
from helpers import PROJECT, Tools, drop_prefix, make_settings
from persist_helpers import run_worker
from prometheus_client.parser import text_string_to_metric_families

from broker.mcp.calllog import CallLog
from broker.server import build_http_app, build_server
from broker.store.embedded import start_redis_server

BEARER = "bearer-for-metrics"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(app: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://broker") as http:
        return await http.get("/metrics", headers=headers or {})


async def test_metrics_carry_calls_errors_latency_redis_and_doorbell_lag(backend: str, tmp_path: Path) -> None:
    app, mcp = build_http_app(make_settings(backend, tmp_path), "127.0.0.1")
    try:
        async with Client(mcp) as client:
            tools = Tools(client)
            await tools.project()
            await tools.agent("BlueLake")
            await tools.agent("GreenCastle")
            waiting = asyncio.create_task(
                tools.call("wait_for_mail", project_key=PROJECT, agent_name="GreenCastle", timeout_seconds=10)
            )
            await asyncio.sleep(0.2)
            await tools.send("BlueLake", ["GreenCastle"])
            await waiting
            await tools.error("fetch_inbox", project_key=PROJECT, agent_name="NoSuchAgent")

        response = await scrape(app)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = samples(response.text)
        assert found[("broker_tool_calls_total", (("tool", "send_message"),))] == 1
        assert found[("broker_tool_calls_total", (("tool", "register_agent"),))] == 2
        assert found[("broker_tool_errors_total", (("code", "NOT_FOUND"), ("tool", "fetch_inbox")))] == 1
        assert ("broker_tool_errors_total", (("code", "NOT_FOUND"), ("tool", "send_message"))) not in found
        assert found[("broker_tool_duration_seconds_count", (("tool", "send_message"),))] == 1
        assert found[("broker_tool_duration_seconds_bucket", (("le", "+Inf"), ("tool", "send_message")))] == 1
        assert found[("broker_redis_up", ())] == 1
        assert 0 < found[("broker_redis_rtt_seconds", ())] < 5
        assert found[("broker_doorbell_lag_seconds_count", ())] >= 1
        assert found[("broker_waiters", ())] == 0  # the wait ended; nothing left registered
        for name in ("broker_push_subscriptions", "broker_persist_workers", "broker_dead_letters"):
            assert (name, ()) in found, name
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_an_unknown_tool_name_adds_no_series(backend: str, tmp_path: Path) -> None:
    """Label values come only from registered tools: a caller cannot grow the series count."""
    app, mcp = build_http_app(make_settings(backend, tmp_path), "127.0.0.1")
    try:
        async with Client(mcp) as client:
            result = await client.call_tool("no_such_tool_" + "x" * 50, {}, raise_on_error=False)
            assert result.is_error
        assert "no_such_tool" not in (await scrape(app)).text
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_metrics_follow_the_bearer_rule_unless_opened(redis_url: str, tmp_path: Path) -> None:
    app, mcp = build_http_app(make_settings(redis_url, tmp_path, HTTP_BEARER_TOKEN=BEARER), "127.0.0.1")
    assert (await scrape(app)).status_code == 401
    assert (await scrape(app, {"Authorization": f"Bearer {BEARER}"})).status_code == 200
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]

    settings = make_settings(redis_url, tmp_path, HTTP_BEARER_TOKEN=BEARER, METRICS_AUTH="none")
    app, mcp = build_http_app(settings, "127.0.0.1")
    assert (await scrape(app)).status_code == 200
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://broker") as http:
        assert (await http.post("/mcp/", json={})).status_code == 401  # only /metrics was opened
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_metrics_can_be_turned_off(redis_url: str, tmp_path: Path) -> None:
    app, mcp = build_http_app(make_settings(redis_url, tmp_path, METRICS_ENABLED=False), "127.0.0.1")
    assert (await scrape(app)).status_code == 404
    await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_metrics_report_redis_down_without_failing(tmp_path: Path) -> None:
    """A scrape while Redis is away still answers, with broker_redis_up 0."""
    app, _mcp = build_http_app(make_settings("redis://127.0.0.1:1/0", tmp_path), "127.0.0.1")
    response = await scrape(app)
    assert response.status_code == 200
    assert samples(response.text)[("broker_redis_up", ())] == 0


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def until_lines(stream: io.StringIO, count: int) -> list[dict[str, Any]]:
    for _ in range(200):
        lines = log_lines(stream)
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.01)
    return log_lines(stream)


async def test_a_failed_call_is_one_json_line_with_code_and_no_traceback(backend: str, tmp_path: Path) -> None:
    mcp = build_server(make_settings(backend, tmp_path))
    stream = io.StringIO()
    mcp.call_log = CallLog("json", "errors", stream)  # type: ignore[attr-defined]
    try:
        async with Client(mcp) as client:
            tools = Tools(client)
            await tools.project()
            await tools.agent("BlueLake")  # succeeds: not logged under LOG_CALLS=errors
            await tools.error("fetch_inbox", project_key=PROJECT, agent_name="Nobody")
        (line,) = await until_lines(stream, 1)
        assert line["tool"] == "fetch_inbox" and line["code"] == "NOT_FOUND"
        assert line["agent"] == "Nobody" and line["project"] == PROJECT
        assert line["level"] == "warning" and line["duration_ms"] >= 0
        assert "traceback" not in line
    finally:
        mcp.call_log.stop()  # type: ignore[attr-defined]
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_log_calls_all_logs_successes_too(redis_url: str, tmp_path: Path) -> None:
    mcp = build_server(make_settings(redis_url, tmp_path))
    stream = io.StringIO()
    mcp.call_log = CallLog("json", "all", stream)  # type: ignore[attr-defined]
    try:
        async with Client(mcp) as client:
            await Tools(client).project()
        (line,) = await until_lines(stream, 1)
        assert line["tool"] == "ensure_project" and line["code"] == "OK" and line["level"] == "info"
    finally:
        mcp.call_log.stop()  # type: ignore[attr-defined]
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_redis_outage_is_one_text_line_per_call_without_traceback(tmp_path: Path) -> None:
    """During an outage every call fails with CONNECTION_ERROR: one short line each, no traceback
    (rendering one per failed call on the event loop is what stalled the broker)."""
    mcp = build_server(make_settings("redis://127.0.0.1:1/0", tmp_path))
    stream = io.StringIO()
    mcp.call_log = CallLog("text", "errors", stream)  # type: ignore[attr-defined]
    fastmcp_records: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = fastmcp_records.append  # type: ignore[method-assign]
    fastmcp_log = logging.getLogger("fastmcp.server.server")
    fastmcp_log.addHandler(capture)
    try:
        async with Client(mcp) as client:
            for _ in range(5):
                text = await Tools(client).error("ensure_project", human_key=PROJECT)
                assert text.startswith("CONNECTION_ERROR:")
        for _ in range(200):
            if stream.getvalue().count("\n") >= 5:
                break
            await asyncio.sleep(0.01)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 5
        assert all("tool=ensure_project" in line and "code=CONNECTION_ERROR" in line for line in lines)
        assert "Traceback" not in stream.getvalue()
        assert fastmcp_records == []  # FastMCP's own traceback per failed call is not rendered
    finally:
        fastmcp_log.removeHandler(capture)
        mcp.call_log.stop()  # type: ignore[attr-defined]


async def test_an_unexpected_error_carries_its_traceback(redis_url: str, tmp_path: Path) -> None:
    """UNHANDLED_EXCEPTION is a bug to report: its line has the traceback (formatted off the loop)."""
    mcp = build_server(make_settings(redis_url, tmp_path))
    stream = io.StringIO()
    mcp.call_log = CallLog("json", "errors", stream)  # type: ignore[attr-defined]

    @mcp.tool
    async def broken_tool() -> dict[str, Any]:
        raise RuntimeError("boom")

    mcp.usage.track(["broken_tool"])  # type: ignore[attr-defined]
    try:
        async with Client(mcp) as client:
            text = await Tools(client).error("broken_tool")
        assert text.startswith("UNHANDLED_EXCEPTION:")
        (line,) = await until_lines(stream, 1)
        assert line["code"] == "UNHANDLED_EXCEPTION" and line["level"] == "error"
        assert "RuntimeError: boom" in line["traceback"]
    finally:
        mcp.call_log.stop()  # type: ignore[attr-defined]
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_dashboard_and_alert_rules_use_only_series_the_broker_serves(redis_url: str, tmp_path: Path) -> None:
    app, mcp = build_http_app(make_settings(redis_url, tmp_path), "127.0.0.1")
    try:
        text = (await scrape(app)).text
        served = set()
        for family in text_string_to_metric_families(text):
            served.add(family.name)
            served.update(sample.name for sample in family.samples)
            if family.type == "counter":
                served.add(family.name + "_total")
            if family.type == "histogram":
                served.add(family.name + "_bucket")
        docs = Path(__file__).resolve().parent.parent / "docs" / "grafana"
        rules = yaml.safe_load((docs / "alerts.yml").read_text())
        expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
        dashboard = json.loads((docs / "dashboard.json").read_text())
        expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
        used = {name for expr in expressions for name in re.findall(r"\bbroker_[a-z_]+", expr)}
        assert used and used <= served, sorted(used - served)
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_persisted_messages_and_commits_count_every_worker(backend: str, tmp_path: Path) -> None:
    settings = make_settings(backend, tmp_path)
    app, mcp = build_http_app(settings, "127.0.0.1")
    try:
        async with Client(mcp) as client:
            tools = Tools(client)
            await tools.project()
            await tools.agent("BlueLake")
            await tools.agent("GreenCastle")
            for _ in range(3):
                await tools.send("BlueLake", ["GreenCastle"])
        await run_worker(mcp, settings)
        found = samples((await scrape(app)).text)
        assert found[("broker_persisted_messages_total", ())] == 3
        assert found[("broker_persist_commits_total", ())] >= 1
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_backlog_series_per_project_are_capped(backend: str, tmp_path: Path) -> None:
    """Without a worker the backlog grows; past METRICS_MAX_PROJECTS the rest is one _other series."""
    app, mcp = build_http_app(make_settings(backend, tmp_path, METRICS_MAX_PROJECTS=1), "127.0.0.1")
    try:
        async with Client(mcp) as client:
            tools = Tools(client)
            for key, sends in (("/tmp/busy-project", 3), ("/tmp/quiet-project", 1)):
                await tools.project(key)
                await tools.agent("BlueLake", project_key=key)
                await tools.agent("GreenCastle", project_key=key)
                for _ in range(sends):
                    await tools.send("BlueLake", ["GreenCastle"], project_key=key)
        found = samples((await scrape(app)).text)
        backlog = {labels[0][1]: value for (name, labels), value in found.items() if name == "broker_persist_pending"}
        assert set(backlog) == {"tmp-busy-project", "_other"}
        assert backlog["tmp-busy-project"] > backlog["_other"] > 0
        age = found[("broker_persist_oldest_pending_seconds", (("project", "tmp-busy-project"),))]
        assert 0 <= age < 60
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def test_readiness_and_scrape_answer_while_redis_is_frozen(tmp_path: Path) -> None:
    """A Redis that stops answering (SIGSTOP: a stalled host) makes readiness 503 and the scrape
    report broker_redis_up 0 within the probe timeout, not after the client's socket timeout."""
    proc, url = start_redis_server(tmp_path / "redis", appendonly=False)
    app, _mcp = build_http_app(make_settings(url, tmp_path), "127.0.0.1")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://broker") as http:
            assert (await http.get("/health/readiness")).status_code == 200
            proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            response = await http.get("/health/readiness")
            assert response.status_code == 503 and "did not answer" in response.json()["detail"]
            assert samples((await http.get("/metrics")).text)[("broker_redis_up", ())] == 0
            assert time.monotonic() - started < 10  # the socket timeout alone is 20 s
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()
