"""`python -m broker.config` prints docs/configuration.md."""

from broker.config.page import settings_markdown

print(settings_markdown(), end="")
