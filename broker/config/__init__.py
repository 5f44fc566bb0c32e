"""The broker's settings (settings.py), the vocabularies they check against (output_format.py,
hosts.py) and the generated configuration page (page.py)."""

from broker.config.hosts import LOOPBACK_NAMES, is_loopback
from broker.config.output_format import OUTPUT_FORMAT_NAMES, SERVER_DEFAULT_FORMAT_VALUES, output_format_name
from broker.config.page import settings_markdown
from broker.config.settings import Settings, get_settings

__all__ = [
    "LOOPBACK_NAMES",
    "OUTPUT_FORMAT_NAMES",
    "SERVER_DEFAULT_FORMAT_VALUES",
    "Settings",
    "get_settings",
    "is_loopback",
    "output_format_name",
    "settings_markdown",
]
