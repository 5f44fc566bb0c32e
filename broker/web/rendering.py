"""HTML out of data: the Jinja2 environment (autoescaping every value) and Markdown bodies
rendered by markdown-it-py, then cleaned by nh3 against an allow-list.

Markdown is rendered with raw HTML off (an agent's ``<script>`` comes out as text), and the
output still goes through the sanitiser: a renderer bug or a crafted link must meet a second,
independent wall before it reaches a browser.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import nh3
from jinja2 import Environment, PackageLoader, Template
from markdown_it import MarkdownIt
from markupsafe import Markup

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
# No style attribute: the Content-Security-Policy refuses inline styles (a table's column
# alignment is the only thing lost).
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(
    ["table", "strikethrough"]
)


def markdown_html(text: str | None) -> Markup:
    """The body as safe HTML."""
    rendered = _markdown.render(text or "")
    cleaned = nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )
    return Markup(cleaned)  # cleaned by nh3 against the allow-list above


def path_part(value: Any) -> str:
    """A value as one URL path segment (nothing of it can end the segment or the path)."""
    return quote(str(value), safe="")


def short_time(value: str | None) -> str:
    """ISO-8601 as 'YYYY-MM-DD HH:MM:SS' UTC, or '' when absent."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def query(params: dict[str, Any], **changes: Any) -> str:
    """The query string of ``params`` with ``changes`` (None drops a parameter)."""
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "", False)})


def environment() -> Environment:
    env = Environment(loader=PackageLoader("broker.web", "templates"), autoescape=True, trim_blocks=True)
    env.filters["markdown"] = markdown_html
    env.filters["path"] = path_part
    env.filters["when"] = short_time
    env.globals["query"] = query
    return env


def render_block(template: Template, block: str, context: dict[str, Any]) -> str:
    """Only one block of a page: what the live script swaps in."""
    return "".join(template.blocks[block](template.new_context(context)))
