"""The always-on surface of the reference, checked through a fastmcp Client's listings.

SIGNATURES is transcribed from the reference (agent-mail-api.md §3.1-§3.7): every tool's
parameters in order, as ``name:type`` (required) or ``name:type=default`` (optional), ``?T``
meaning "T or null". The reference omits ``ctx`` and ``format:?str=None``: every tool takes
``format`` except the eight it marks [nf] (NO_FORMAT). The gated build_slots and product_bus
tools are not part of the always-on surface. A parameter or tool of ours that the reference does
not have is listed in OUR_PARAMS / OUR_TOOLS with the docs/compatibility.md bullet that documents it.

RESOURCES / TEMPLATES are transcribed from §4 (without the gated product one). The gated identity
one is always on here (docs/compatibility.md > Resources and tool profiles:
"resource://identity/{project} is always there").
"""

from __future__ import annotations

import ast
import json
from typing import Any

from helpers import Tools

SIGNATURES: dict[str, str] = {
    # §3.1 infrastructure
    "health_check": "",
    "ensure_project": "human_key:str, identity_mode:?str=None",
    "install_precommit_guard": "project_key:str, code_repo_path:str",
    "uninstall_precommit_guard": "code_repo_path:str",
    "archive_project": "project_key:str, registration_token:?str=None",
    "unarchive_project": "project_key:str, registration_token:?str=None",
    "hard_delete_project": "project_key:str, confirmation:str, registration_token:?str=None",
    # §3.2 identity
    "register_agent": "project_key:str, program:str, model:str, name:?str=None, task_description:str='', "
    "attachments_policy:str='auto', registration_token:?str=None",
    "create_agent_identity": "project_key:str, program:str, model:str, name_hint:?str=None, "
    "task_description:str='', attachments_policy:str='auto'",
    "whois": "project_key:str, agent_name:str, registration_token:?str=None, include_recent_commits:bool=True, "
    "commit_limit:int=5",
    "deregister_agent": "project_key:str, agent_name:str, registration_token:?str=None",
    "retire_agent": "project_key:str, agent_name:str, registration_token:?str=None",
    "unretire_agent": "project_key:str, agent_name:str, registration_token:?str=None",
    "hard_delete_agent": "project_key:str, agent_name:str, confirmation:str, registration_token:?str=None",
    "list_window_identities": "project_key:str",
    "rename_window": "project_key:str, window_uuid:str, new_display_name:str",
    "expire_window": "project_key:str, window_uuid:str",
    # §3.3 messaging
    "send_message": "project_key:str, sender_name:str, to:list[str], subject:str, body_md:str, cc:?list[str]=None, "
    "bcc:?list[str]=None, attachment_paths:?list[str]=None, convert_images:?bool=None, importance:str='normal', "
    "ack_required:bool=False, thread_id:?str=None, broadcast:bool=False, topic:?str=None, "
    "auto_contact_if_blocked:?bool=None, sender_token:?str=None",
    "reply_message": "project_key:str, message_id:int, sender_name:str, body_md:str, to:?list[str]=None, "
    "cc:?list[str]=None, bcc:?list[str]=None, subject_prefix:str='Re:', sender_token:?str=None",
    "fetch_inbox": "project_key:str, agent_name:str, limit:int=20, urgent_only:bool=False, include_bodies:bool=False, "
    "since_ts:?str=None, topic:?str=None, registration_token:?str=None",
    "fetch_topic": "project_key:str, topic_name:str, limit:int=50, include_bodies:bool=True, since_ts:?str=None, "
    "agent_name:?str=None, registration_token:?str=None",
    "mark_message_read": "project_key:str, agent_name:str, message_id:int, registration_token:?str=None",
    "acknowledge_message": "project_key:str, agent_name:str, message_id:int, registration_token:?str=None",
    "purge_old_messages": "project_key:str, max_age_days:?int=None, dry_run:bool=True",
    # §3.4 contact
    "request_contact": "project_key:str, from_agent:str, to_agent:str, to_project:?str=None, reason:str='', "
    "ttl_seconds:int=604800, registration_token:?str=None, register_if_missing:bool=True, program:?str=None, "
    "model:?str=None, task_description:?str=None",
    "respond_contact": "project_key:str, to_agent:str, from_agent:str, accept:bool, ttl_seconds:int=2592000, "
    "from_project:?str=None, registration_token:?str=None",
    "list_contacts": "project_key:str, agent_name:str, registration_token:?str=None",
    "set_contact_policy": "project_key:str, agent_name:str, policy:str, registration_token:?str=None",
    # §3.5 search
    "search_messages": "project_key:str, query:str, limit:int=20, agent_name:?str=None, registration_token:?str=None",
    "summarize_thread": "project_key:str, thread_id:str, include_examples:bool=False, llm_mode:bool=True, "
    "llm_model:?str=None, per_thread_limit:int=50, agent_name:?str=None, registration_token:?str=None",
    "summarize_recent": "project_key:str, since_hours:float=1.0, llm_mode:bool=True, llm_model:?str=None, "
    "max_messages:int=500",
    "fetch_summary": "project_key:str, since_hours:float=24.0, limit:int=5",
    # §3.6 file_reservations
    "file_reservation_paths": "project_key:str, agent_name:str, paths:list[str], ttl_seconds:int=3600, "
    "exclusive:bool=True, reason:str='', registration_token:?str=None",
    "release_file_reservations": "project_key:str, agent_name:str, paths:?list[str]=None, "
    "file_reservation_ids:?list[int]=None, registration_token:?str=None",
    "renew_file_reservations": "project_key:str, agent_name:str, extend_seconds:int=1800, paths:?list[str]=None, "
    "file_reservation_ids:?list[int]=None, registration_token:?str=None",
    "force_release_file_reservation": "project_key:str, agent_name:str, file_reservation_id:int, "
    "notify_previous:bool=True, note:str='', registration_token:?str=None",
    # §3.7 workflow_macros
    "macro_start_session": "human_key:str, program:str, model:str, task_description:str='', agent_name:?str=None, "
    "registration_token:?str=None, file_reservation_paths:?list[str]=None, "
    "file_reservation_reason:str='macro-session', file_reservation_ttl_seconds:int=3600, inbox_limit:int=10",
    "macro_prepare_thread": "project_key:str, thread_id:str, program:str, model:str, agent_name:?str=None, "
    "registration_token:?str=None, task_description:str='', register_if_missing:bool=True, "
    "include_examples:bool=True, inbox_limit:int=10, include_inbox_bodies:bool=False, llm_mode:bool=True, "
    "llm_model:?str=None",
    "macro_file_reservation_cycle": "project_key:str, agent_name:str, paths:list[str], ttl_seconds:int=3600, "
    "exclusive:bool=True, reason:str='macro-file_reservation', auto_release:bool=False, "
    "registration_token:?str=None",
    "macro_contact_handshake": "project_key:str, requester:?str=None, target:?str=None, reason:str='', "
    "ttl_seconds:int=604800, auto_accept:bool=False, welcome_subject:?str=None, welcome_body:?str=None, "
    "to_project:?str=None, requester_registration_token:?str=None, target_registration_token:?str=None, "
    "agent_name:?str=None, to_agent:?str=None, register_if_missing:bool=True, program:?str=None, "
    "model:?str=None, task_description:?str=None, thread_id:?str=None",
}

# The reference's [nf] tools: no `format` parameter.
NO_FORMAT = {
    "archive_project",
    "unarchive_project",
    "hard_delete_project",
    "deregister_agent",
    "retire_agent",
    "unretire_agent",
    "hard_delete_agent",
    "purge_old_messages",
}

# Parameters of ours appended after the reference's (docs/compatibility.md bullet named in each comment).
OPERATOR = "operator_token:?str=None"
OUR_PARAMS = {
    # docs/compatibility.md > Agent and project lifecycle: "purge_old_messages ... takes extra
    # registration_token and operator_token arguments ..."
    "purge_old_messages": f"registration_token:?str=None, {OPERATOR}",
    # docs/compatibility.md > General: "Operator credential ... an extra operator_token
    # argument" (docs/security.md)
    **{
        name: OPERATOR
        for name in (
            "archive_project",
            "unarchive_project",
            "hard_delete_project",
            "hard_delete_agent",
            "retire_agent",
            "unretire_agent",
            "deregister_agent",
        )
    },
    # docs/compatibility.md > General: "summarize_recent and fetch_summary show only the
    # viewer's mail ... extra agent_name and registration_token arguments"
    "summarize_recent": "agent_name:?str=None, registration_token:?str=None",
    "fetch_summary": "agent_name:?str=None, registration_token:?str=None",
    # docs/compatibility.md > General: "send_message and reply_message take an optional idempotency_key"
    "send_message": "idempotency_key:?str=None",
    "reply_message": "idempotency_key:?str=None",
    # docs/compatibility.md > General: "The guard tools need the agent's token ..."
    "install_precommit_guard": "agent_name:?str=None, registration_token:?str=None",
    "uninstall_precommit_guard": "project_key:?str=None, agent_name:?str=None, registration_token:?str=None",
}

# Tools of ours (docs/compatibility.md > Realtime delivery: "wait_for_mail ... do not exist in the reference").
OUR_TOOLS = {
    "wait_for_mail": "project_key:str, agent_name:str, timeout_seconds:float=30, after_id:?str|int=None, "
    "include_bodies:bool=False, limit:int=20, registration_token:?str=None",
}

# §4: registered bare and with {?format}.
RESOURCES = [
    "resource://config/environment",
    "resource://tooling/directory",
    "resource://tooling/schemas",
    "resource://tooling/metrics",
    "resource://tooling/locks",
    "resource://tooling/projects",
]
# §4 templates: path -> query parameters in the reference's order. §0: every resource takes
# {?format}; the table writes project/{slug} and agents/{project_key} without it (both forms are
# read below).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "resource://tooling/capabilities/{agent}": ("project", "format"),
    "resource://tooling/recent/{window_seconds}": ("agent", "project", "format"),
    "resource://project/{slug}": ("format",),
    "resource://agents/{project_key}": ("format",),
    "resource://identity/{project}": ("format",),
    "resource://file_reservations/{slug}": ("active_only", "limit", "format"),
    "resource://message/{message_id}": ("project", "agent", "agent_token", "format"),
    "resource://thread/{thread_id}": ("project", "agent", "agent_token", "include_bodies", "format"),
    "resource://inbox/{agent}": (
        "project",
        "since_ts",
        "urgent_only",
        "include_bodies",
        "limit",
        "agent_token",
        "format",
    ),
    "resource://views/urgent-unread/{agent}": ("project", "limit", "agent_token", "format"),
    "resource://views/ack-required/{agent}": ("project", "limit", "agent_token", "format"),
    "resource://views/acks-stale/{agent}": ("project", "ttl_seconds", "limit", "agent_token", "format"),
    "resource://views/ack-overdue/{agent}": ("project", "ttl_minutes", "limit", "agent_token", "format"),
    "resource://mailbox/{agent}": ("project", "limit", "agent_token", "format"),
    "resource://mailbox-with-commits/{agent}": ("project", "limit", "agent_token", "format"),
    "resource://outbox/{agent}": ("project", "limit", "include_bodies", "since_ts", "agent_token", "format"),
}

REQUIRED = object()


def parse(signature: str) -> list[tuple[str, str, Any]]:
    """``"a:str, b:?int=None"`` -> [("a", "str", REQUIRED), ("b", "?int", None)]."""
    params = []
    for part in filter(None, (p.strip() for p in signature.split(", "))):
        spec, _, default = part.partition("=")
        name, _, kind = spec.partition(":")
        params.append((name, kind, ast.literal_eval(default) if default else REQUIRED))
    return params


def type_of(schema: dict[str, Any]) -> str:
    """A JSON schema property in the reference's notation (?T = T or null)."""
    if "anyOf" in schema:
        kinds = [type_of(s) for s in schema["anyOf"] if s.get("type") != "null"]
        optional = any(s.get("type") == "null" for s in schema["anyOf"])
        return ("?" if optional else "") + "|".join(kinds)
    kind = schema.get("type")
    if kind == "array":
        return f"list[{type_of(schema.get('items', {}))}]"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}[kind]


def listed(schema: dict[str, Any]) -> list[tuple[str, str, Any]]:
    required = set(schema.get("required", []))
    return [
        (name, type_of(prop), REQUIRED if name in required else prop.get("default", "<no default>"))
        for name, prop in schema.get("properties", {}).items()
    ]


def expected(name: str) -> list[tuple[str, str, Any]]:
    if name in OUR_TOOLS:
        return parse(OUR_TOOLS[name])
    params = parse(SIGNATURES[name]) + parse(OUR_PARAMS.get(name, ""))
    return params if name in NO_FORMAT else [*params, ("format", "?str", None)]


def test_the_table_is_the_references_forty() -> None:
    assert len(SIGNATURES) == 40
    assert set(SIGNATURES) >= NO_FORMAT and set(OUR_PARAMS) <= set(SIGNATURES)


async def test_every_tool_has_the_references_parameters_in_order(tools: Tools) -> None:
    listing = {tool.name: tool for tool in await tools.client.list_tools()}
    assert set(listing) == set(SIGNATURES) | set(OUR_TOOLS)
    for name, tool in listing.items():
        assert listed(tool.input_schema) == expected(name), name
        required = [p for p, _, default in expected(name) if default is REQUIRED]
        assert sorted(tool.input_schema.get("required", [])) == sorted(required), name


async def test_every_resource_and_template_of_the_reference_is_listed(tools: Tools) -> None:
    resources = sorted(str(r.uri) for r in await tools.client.list_resources())
    templates = sorted(t.uri_template for t in await tools.client.list_resource_templates())
    assert resources == sorted(RESOURCES)
    assert templates == sorted(
        [f"{uri}{{?format}}" for uri in RESOURCES] + [f"{path}{{?{','.join(q)}}}" for path, q in TEMPLATES.items()]
    )


async def test_project_and_agents_resources_read_bare_and_with_format(tools: Tools, trio: dict[str, Any]) -> None:
    slug = trio["project"]["slug"]
    for uri in (f"resource://project/{slug}", f"resource://agents/{slug}"):
        bare = json.loads((await tools.client.read_resource(uri))[0].text)
        formatted = json.loads((await tools.client.read_resource(f"{uri}?format=json"))[0].text)
        assert bare == formatted and bare, uri
    for uri in RESOURCES:  # bare and {?format}: the same document (generated_at aside)
        bare = json.loads((await tools.client.read_resource(uri))[0].text)
        formatted = json.loads((await tools.client.read_resource(f"{uri}?format=json"))[0].text)
        assert type(bare) is type(formatted), uri
        if isinstance(bare, dict):
            assert bare.keys() == formatted.keys(), uri
        else:
            assert bare == formatted, uri


# §4's outputs, top level (item keys where the output is a list).
MAIL = {"project", "agent", "count", "messages"}
RESERVATION_ROW = {
    *("id", "agent", "path_pattern", "exclusive", "reason", "created_ts", "expires_ts", "released_ts", "stale"),
    *("stale_reasons", "last_agent_activity_ts", "last_mail_activity_ts", "last_filesystem_activity_ts"),
    "last_git_activity_ts",
}
RESOURCE_KEYS: dict[str, set[str]] = {
    "resource://config/environment": {"environment", "database_url", "http"},
    "resource://tooling/directory": {"generated_at", "metrics_uri", "output_formats", "clusters", "playbooks"},
    "resource://tooling/schemas": {"generated_at", "global_optional", "output_formats", "tools"},
    "resource://tooling/metrics": {"generated_at", "tools"},
    "resource://tooling/locks": {"locks", "summary"},
    "resource://tooling/capabilities/BlueLake": {"generated_at", "agent", "project", "capabilities"},
    "resource://tooling/recent/3600": {"generated_at", "window_seconds", "count", "entries"},
    "resource://tooling/projects": {"id", "slug", "human_key", "created_at"},
    "resource://project/{slug}": {"id", "slug", "human_key", "created_at", "agents"},
    "resource://agents/{slug}": {"project", "agents", "retired_agents"},
    "resource://file_reservations/{slug}": RESERVATION_ROW,
    "resource://thread/T-1?{q}&agent=BlueLake": {"project", "thread_id", "messages"},
    "resource://inbox/GreenCastle?{q}": MAIL,
    "resource://views/urgent-unread/GreenCastle?{q}": MAIL,
    "resource://views/ack-required/GreenCastle?{q}": MAIL,
    "resource://views/acks-stale/GreenCastle?{q}": MAIL | {"ttl_seconds"},
    "resource://views/ack-overdue/GreenCastle?{q}": MAIL,
    "resource://mailbox/GreenCastle?{q}": MAIL,
    "resource://mailbox-with-commits/GreenCastle?{q}": MAIL,
    "resource://outbox/BlueLake?{q}": MAIL,
}


async def test_every_resource_has_the_references_top_level_keys(tools: Tools, trio: dict[str, Any]) -> None:
    project = trio["project"]
    await tools.send("BlueLake", ["GreenCastle"], thread_id="T-1", importance="urgent", ack_required=True)
    await tools.call("file_reservation_paths", project_key=project["human_key"], agent_name="BlueLake", paths=["a.py"])
    for uri, expected_keys in RESOURCE_KEYS.items():
        uri = uri.format(slug=project["slug"], q=f"project={project['human_key']}")
        found = json.loads((await tools.client.read_resource(uri))[0].text)
        if isinstance(found, list):
            assert found and all(item.keys() == expected_keys for item in found), uri
        else:
            assert found.keys() == expected_keys, uri
