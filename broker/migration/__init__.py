"""Moving between this broker and MCP Agent Mail (the reference): ``broker import-agent-mail``
reads a reference mailbox (its SQLite database and Git archive), ``broker export-agent-mail``
writes ours back in that layout. ``reference.py`` holds the reference's formats, in one place."""
