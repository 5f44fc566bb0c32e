"""docs/configuration.md, generated from the settings' fields: `python -m broker.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo

from broker.config.settings import Settings

CONFIGURATION_INTRO = """# Configuration

Every setting of the broker, read from the environment (or a `.env` file in the working
directory) when a server, worker or CLI command is built. This page is generated from
`broker/config/settings.py`; do not edit it by hand, run

```sh
python -m broker.config > docs/configuration.md
```

(`tests/test_configuration_docs.py` fails when it is out of date). What each group of settings
does is explained on its topic's page: [limits](limits.md), [durability](durability.md),
[operations](operations.md), [metrics](metrics.md), [security](security.md),
[reservations](reservations.md), [contacts](contacts.md), [lifecycle](lifecycle.md),
[resources and profiles](resources-and-profiles.md), [output format](tools.md#output-format).
"""

_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
_BOUNDS = ((annotated_types.Ge, ">=", "ge"), (annotated_types.Gt, ">", "gt"), (annotated_types.Le, "<=", "le"))


def _type_text(field: FieldInfo) -> str:
    annotation: Any = field.annotation
    if get_origin(annotation) is Literal:
        text = " \\| ".join(f"`{value}`" for value in get_args(annotation))
    else:
        kinds = [kind for kind in get_args(annotation) or (annotation,) if kind is not type(None)]
        text = " or ".join(_TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind))) for kind in kinds)
    for meta in field.metadata:
        for kind, sign, attr in _BOUNDS:
            if isinstance(meta, kind):
                text += f", {sign} {getattr(meta, attr)}"
        if isinstance(meta, annotated_types.MaxLen):
            text += f", at most {meta.max_length} characters"
    return text


def _default_text(value: object) -> str:
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def settings_markdown() -> str:
    """docs/configuration.md: the intro, then one table row per setting in declaration order."""
    rows = ["| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if not field.alias or not field.description:
            raise ValueError(f"Settings.{name} needs an alias (its env name) and a description")
        description = field.description.replace("|", "\\|")
        rows.append(f"| `{field.alias}` | {_type_text(field)} | {_default_text(field.default)} | {description} |")
    return CONFIGURATION_INTRO + "\n" + "\n".join(rows) + "\n"
