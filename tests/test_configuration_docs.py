"""docs/configuration.md is the output of `python -m broker.config`: a setting added without a
description, or a changed default, fails here until the page is regenerated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from broker.config import Settings, settings_markdown

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "configuration.md"


def test_configuration_page_is_the_generated_one() -> None:
    assert PAGE.read_text() == settings_markdown(), "run: python -m broker.config > docs/configuration.md"


def test_every_setting_is_a_row_with_its_default() -> None:
    text = PAGE.read_text()
    for field in Settings.model_fields.values():
        assert f"| `{field.alias}` |" in text
    assert "| `AGENT_AUTH` | `open` \\| `required` | `open` |" in text
    assert "| `REDIS_MAX_CONNECTIONS` | integer, >= 1 | `32` |" in text


def test_the_module_prints_the_page() -> None:
    run = subprocess.run([sys.executable, "-m", "broker.config"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert run.stdout == settings_markdown()
