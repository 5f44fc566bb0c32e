"""The ``format`` argument: ``toon`` replaces a tool's or resource's result by a TOON envelope
whose ``data`` decodes (with the toon-format library's own decoder) to exactly the JSON result;
aliases, the server default from the settings, refusals, the encoder-failure fallback, and the
tools that take no ``format`` (docs/tools.md, "Output format")."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pydantic
import pytest
import toon_format
from fastmcp import Client
from fastmcp.exceptions import McpError
from helpers import PROJECT, SLUG, Tools, drop_prefix, make_settings, snapshot

from broker.config import Settings
from broker.server import build_server

ENCODER = f"toon-format {toon_format.__version__}"
INBOX = {"project_key": PROJECT, "agent_name": "GreenCastle"}
SEND = {"project_key": PROJECT, "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "s", "body_md": "b"}


@asynccontextmanager
async def broker(backend: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Tools]:
    """A server of its own (for settings the shared fixture does not have) and a client of it."""
    mcp = build_server(make_settings(backend, tmp_path, **overrides))
    try:
        async with Client(mcp) as client:
            yield Tools(client)
    finally:
        await drop_prefix(mcp.store)  # type: ignore[attr-defined]


async def raw(tools: Tools, tool: str, **args: Any) -> Any:
    """A call's result as its text says, checked against its structured content (a list tool's
    is ``{"result": ...}``, the reference's wrapping, envelope or not)."""
    result = await tools.client.call_tool(tool, args, raise_on_error=False)
    assert not result.is_error, result.content[0].text
    text = json.loads(result.content[0].text)
    assert result.structured_content in (text, {"result": text})
    return text


async def read(tools: Tools, uri: str) -> Any:
    return json.loads((await tools.client.read_resource(uri))[0].text)


def decoded(envelope: dict[str, Any], source: str = "param") -> Any:
    """The JSON value a TOON envelope carries (after checking the envelope itself)."""
    assert set(envelope) == {"format", "data", "meta"}, envelope
    assert envelope["format"] == "toon"
    assert envelope["meta"] == {"requested": "toon", "source": source, "encoder": ENCODER}
    assert isinstance(envelope["data"], str)
    return toon_format.decode(envelope["data"])


async def mail(tools: Tools) -> None:
    """A project, three agents, a thread of two messages on a topic, a contact link."""
    await tools.project()
    for name in ("BlueLake", "GreenCastle", "alpha-one"):
        await tools.agent(name)
    sent = await tools.send(
        "BlueLake", ["GreenCastle"], topic="ops", ack_required=True, body_md="Line one, with a comma\n- item: 1"
    )
    first = sent["deliveries"][0]["payload"]
    await tools.call(
        "reply_message", project_key=PROJECT, message_id=first["id"], sender_name="GreenCastle", body_md="42"
    )
    await tools.call("request_contact", project_key=PROJECT, from_agent="alpha-one", to_agent="GreenCastle")
    await tools.call("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["src/"])


READS = [
    ("fetch_inbox", {**INBOX, "include_bodies": True}),
    ("fetch_topic", {"project_key": PROJECT, "topic_name": "ops", "agent_name": "GreenCastle"}),
    ("list_contacts", {"project_key": PROJECT, "agent_name": "alpha-one"}),
    ("whois", {"project_key": PROJECT, "agent_name": "BlueLake"}),
    ("ensure_project", {"human_key": PROJECT}),
]


async def test_toon_results_decode_to_the_json_results(tools: Tools) -> None:
    await mail(tools)
    for tool, args in READS:
        as_json = await raw(tools, tool, **args, format="json")
        assert as_json == await raw(tools, tool, **args), tool  # json is the default
        assert as_json and as_json != [], tool
        assert decoded(await raw(tools, tool, **args, format="toon")) == as_json, tool


async def test_a_write_answers_in_toon(tools: Tools) -> None:
    await mail(tools)
    envelope = await raw(tools, "send_message", **SEND, format="toon")
    delivery = decoded(envelope)["deliveries"][0]
    inbox = await tools.inbox("GreenCastle")
    assert delivery["payload"]["id"] == inbox[0]["id"] and delivery["payload"]["subject"] == "s"


RESOURCES = [
    "resource://inbox/GreenCastle?project={project}&include_bodies=true",
    "resource://thread/{thread}?project={project}&agent=GreenCastle&include_bodies=true",
    "resource://outbox/BlueLake?project={project}&include_bodies=true",
    "resource://views/ack-required/GreenCastle?project={project}",
    "resource://file_reservations/{slug}",
    "resource://project/{slug}",
    "resource://agents/{slug}",
    "resource://tooling/locks",
    "resource://config/environment",
]


async def test_toon_resources_decode_to_the_json_reads(tools: Tools) -> None:
    await mail(tools)
    thread = (await tools.inbox("GreenCastle"))[-1]["id"]
    for template in RESOURCES:
        uri = template.format(project=PROJECT, slug=SLUG, thread=thread)
        glue = "&" if "?" in uri else "?"
        as_json = await read(tools, uri + glue + "format=json")
        assert as_json == await read(tools, uri), uri
        assert decoded(await read(tools, uri + glue + "format=toon")) == as_json, uri


async def test_aliases_and_default_markers(tools: Tools) -> None:
    await mail(tools)
    as_json = await raw(tools, "fetch_inbox", **INBOX)
    for alias in ("application/toon", "text/toon", "TOON", " Text/Toon "):
        assert decoded(await raw(tools, "fetch_inbox", **INBOX, format=alias)) == as_json, alias
    for alias in ("json", "application/json", "text/json", "JSON", "", "auto", "default", "none", "null"):
        assert await raw(tools, "fetch_inbox", **INBOX, format=alias) == as_json, alias
    project = await read(tools, f"resource://project/{SLUG}")
    assert decoded(await read(tools, f"resource://project/{SLUG}?format=application/toon")) == project
    assert await read(tools, f"resource://project/{SLUG}?format=text/json") == project


async def test_invalid_format_is_refused_naming_the_accepted_values(tools: Tools, server: Any) -> None:
    await mail(tools)
    before = await snapshot(server.store)
    for value in ("yaml", "toon2", "text/plain"):
        error = await tools.error("send_message", **SEND, format=value)
        assert error.startswith(f"INVALID_ARGUMENT: format '{value}' is not one of json, toon, application/json, "
                                "text/json, application/toon, text/toon"), error  # fmt: skip
        assert "format='toon'" in error
    assert await snapshot(server.store) == before  # refused before anything was sent
    with pytest.raises(McpError) as caught:
        await tools.client.read_resource(f"resource://agents/{SLUG}?format=xml")
    assert str(caught.value).startswith("INVALID_ARGUMENT: format 'xml' is not one of json, toon")


async def test_tools_without_format_refuse_it(tools: Tools) -> None:
    """The reference's eight [nf] tools have no format argument: passing one is an unknown argument."""
    await mail(tools)
    error = await tools.error("archive_project", project_key=PROJECT, format="toon")
    assert error.startswith("INVALID_ARGUMENT: format: Unexpected keyword argument"), error
    assert "archived_at" not in await raw(tools, "ensure_project", human_key=PROJECT)
    error = await tools.error("retire_agent", project_key=PROJECT, agent_name="alpha-one", format="json")
    assert error.startswith("INVALID_ARGUMENT: format:"), error


async def test_server_default_from_the_settings(backend: str, tmp_path: Path) -> None:
    async with broker(backend, tmp_path, MCP_AGENT_MAIL_OUTPUT_FORMAT="toon") as tools:
        await tools.client.call_tool("ensure_project", {"human_key": PROJECT})
        for name in ("BlueLake", "GreenCastle"):
            await raw(tools, "register_agent", project_key=PROJECT, program="claude-code", model="opus-4", name=name)
        await raw(tools, "send_message", **SEND)
        as_json = await raw(tools, "fetch_inbox", **INBOX, format="json")
        assert decoded(await raw(tools, "fetch_inbox", **INBOX), source="default") == as_json
        assert decoded(await raw(tools, "fetch_inbox", **INBOX, format="auto"), source="default") == as_json
        assert decoded(await raw(tools, "fetch_inbox", **INBOX, format="toon")) == as_json  # source param
        project = await read(tools, f"resource://project/{SLUG}?format=json")
        assert decoded(await read(tools, f"resource://project/{SLUG}"), source="default") == project
        # the default covers the tools that take no format, as the reference's wrapper does
        retired = decoded(await raw(tools, "retire_agent", project_key=PROJECT, agent_name="GreenCastle"), "default")
        assert retired["status"] == "retired"


async def test_default_precedence_and_refused_settings(backend: str, tmp_path: Path) -> None:
    async with broker(backend, tmp_path, TOON_DEFAULT_FORMAT="text/toon") as tools:
        health = await raw(tools, "health_check")
        assert decoded(health, source="default")["status"] == "ok"
    both = {"MCP_AGENT_MAIL_OUTPUT_FORMAT": "application/json", "TOON_DEFAULT_FORMAT": "toon"}
    async with broker(backend, tmp_path, **both) as tools:
        assert (await raw(tools, "health_check"))["status"] == "ok"  # MCP_AGENT_MAIL_OUTPUT_FORMAT wins
    assert Settings(MCP_AGENT_MAIL_OUTPUT_FORMAT="auto").output_format == ""
    for name in ("MCP_AGENT_MAIL_OUTPUT_FORMAT", "TOON_DEFAULT_FORMAT"):
        with pytest.raises(pydantic.ValidationError, match="format 'yaml' is not one of json, toon"):
            Settings(**{name: "yaml"})


async def test_toon_stats(backend: str, tmp_path: Path) -> None:
    async with broker(backend, tmp_path, TOON_STATS="true") as tools:
        await mail(tools)
        as_json = await raw(tools, "fetch_inbox", **INBOX)
        envelope = await raw(tools, "fetch_inbox", **INBOX, format="toon")
        stats = envelope["meta"].pop("toon_stats")
        assert decoded(envelope) == as_json
        compact = json.dumps(as_json, ensure_ascii=False, separators=(",", ":"))
        assert stats["json_tokens"] == math.ceil(len(compact) / 4)
        # may exceed json_tokens: inbox items are not uniform rows of scalars (TOON's tabular form)
        assert stats["toon_tokens"] == math.ceil(len(envelope["data"]) / 4)
        assert stats["saved_tokens"] == stats["json_tokens"] - stats["toon_tokens"]
        assert stats["saved_percent"] == round(100 * stats["saved_tokens"] / stats["json_tokens"], 1)


async def test_encoder_failure_falls_back_to_a_json_envelope(tools: Tools, monkeypatch: pytest.MonkeyPatch) -> None:
    """No result of ours makes the encoder fail (they are plain JSON data), so the third-party
    encoder itself is made to fail, as a bug in it would."""
    await mail(tools)
    as_json = await raw(tools, "fetch_inbox", **INBOX)
    project = await read(tools, f"resource://project/{SLUG}")

    def broken(obj: Any, **options: Any) -> str:
        raise ValueError("Object is nested too deeply to encode")

    monkeypatch.setattr(toon_format, "encode", broken)
    expected_meta = {
        "requested": "toon",
        "source": "param",
        "toon_error": "TOON encoder failed (ValueError): Object is nested too deeply to encode",
    }
    assert await raw(tools, "fetch_inbox", **INBOX, format="toon") == {
        "format": "json", "data": as_json, "meta": expected_meta,
    }  # fmt: skip
    assert await read(tools, f"resource://project/{SLUG}?format=toon") == {
        "format": "json", "data": project, "meta": expected_meta,
    }  # fmt: skip
