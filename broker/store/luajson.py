"""JSON text exactly as the Lua scripts write it, for code that writes the same records from
Python (``broker rehydrate``): a record rebuilt from the index must be byte for byte the one a
live call stored, because scripts match inside it (fetch_view.lua looks for
``"ack_required":true``) and readers compare it.

Redis's cjson escapes ``"``, ``\\``, ``/``, control characters and DEL, and writes every other
byte (UTF-8 included) as is; Python's ``json`` escapes non-ASCII and leaves ``/`` alone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_SHORT = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r", 34: '\\"', 47: "\\/", 92: "\\\\"}
_ESCAPES = {code: _SHORT.get(code, f"\\u{code:04x}") for code in (*range(32), 34, 47, 92, 127)}

# Bodies up to this size are copied into each inbox entry so a page with bodies is one read;
# larger ones are read from the project's bodies hash.
INLINE_BODY_BYTES = 2048


def string(value: str) -> str:
    """``cjson.encode(value)`` of a string."""
    return '"' + value.translate(_ESCAPES) + '"'


def optional(value: str | None) -> str:
    """lib/common.lua's ``jstr``: null for nil or empty, else the string."""
    return string(value) if value else "null"


def string_list(values: Sequence[str]) -> str:
    """lib/common.lua's ``jlist``: a JSON array of strings (``[]`` when empty)."""
    return "[" + ",".join(string(v) for v in values) + "]"


def message_head(message: dict[str, Any], sender: str, foreign: dict[str, str] | None, attachments: list[Any]) -> str:
    """lib/contacts.lua's ``message_head`` for an indexed message row: the same fields in the
    same order. ``foreign``: the sender's project {slug, human_key} when it is another one."""
    head = (
        f'{{"id":{message["id"]},"project_id":{message["project_id"]},"sender_id":{message["sender_id"]}'
        f',"thread_id":{optional(message["thread_id"])},"topic":{optional(message["topic"])}'
        f',"subject":{string(message["subject"])},"importance":{string(message["importance"])}'
        f',"ack_required":{"true" if message["ack_required"] else "false"}'
        f',"created_ts":"{message["created_ts"]}"'
        f',"attachments":{json.dumps(attachments, separators=(",", ":")) if attachments else "[]"}'
        f',"from":{string(sender)}'
    )
    if foreign:
        head += (
            f',"from_project":{string(foreign["human_key"])},"from_project_slug":{string(foreign["slug"])}'
            f',"from_address":{string("project:" + foreign["slug"] + "#" + sender)}'
        )
    return head + "}"


def inbox_item(head: str, kind: str) -> str:
    """An inbox entry's ``j``: the head with the recipient's kind added (lib/contacts.lua)."""
    return head[:-1] + ',"kind":' + string(kind) + "}"


def recipients(lists: dict[str, list[str]]) -> str:
    """A message's ``recipients`` field, as send_message.lua writes it."""
    return f'{{"to":{string_list(lists["to"])},"cc":{string_list(lists["cc"])},"bcc":{string_list(lists["bcc"])}}}'
