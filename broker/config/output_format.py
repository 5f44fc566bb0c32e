"""The reference's `format` vocabulary, shared by the settings and the tools' output wrapper."""

from __future__ import annotations

# The reference's `format` vocabulary: two output formats, four MIME-type aliases, and the
# values that mean "no choice, use the server default" (docs/tools.md, "Output format").
OUTPUT_FORMAT_NAMES = {
    "json": "json",
    "toon": "toon",
    "application/json": "json",
    "text/json": "json",
    "application/toon": "toon",
    "text/toon": "toon",
}
SERVER_DEFAULT_FORMAT_VALUES = ("", "auto", "default", "none", "null")


def output_format_name(value: str) -> str:
    """``json`` or ``toon`` for a format name or alias (any case, outer spaces ignored), ``""``
    for a value asking for the server default; ValueError for anything else."""
    text = value.strip().lower()
    if text in SERVER_DEFAULT_FORMAT_VALUES:
        return ""
    if text not in OUTPUT_FORMAT_NAMES:
        raise ValueError(
            f"format '{value}' is not one of {', '.join(OUTPUT_FORMAT_NAMES)} "
            f"(or {', '.join(repr(v) for v in SERVER_DEFAULT_FORMAT_VALUES)} for the server default)"
        )
    return OUTPUT_FORMAT_NAMES[text]
