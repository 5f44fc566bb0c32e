"""Which cluster each tool belongs to: the reference's clusters (its §3 headings), used by tool
profiles (broker/mcp/profiles.py) and the tooling directory (resource://tooling/directory).

The map names every tool of the reference's surface, its gated build_slots and product_bus
clusters included, plus ``wait_for_mail`` (ours); a test checks that every tool a full server
registers is in it. Per-tool descriptions and
argument schemas are NOT kept here: the directory reads them from the registered tools.
"""

from __future__ import annotations

CLUSTERS: dict[str, tuple[str, ...]] = {
    "infrastructure": (
        "health_check",
        "ensure_project",
        "install_precommit_guard",
        "uninstall_precommit_guard",
        "archive_project",
        "unarchive_project",
        "hard_delete_project",
    ),
    "identity": (
        "register_agent",
        "create_agent_identity",
        "whois",
        "deregister_agent",
        "retire_agent",
        "unretire_agent",
        "hard_delete_agent",
        "list_window_identities",
        "rename_window",
        "expire_window",
    ),
    "messaging": (
        "send_message",
        "reply_message",
        "fetch_inbox",
        "fetch_topic",
        "mark_message_read",
        "acknowledge_message",
        "purge_old_messages",
        "wait_for_mail",
    ),
    "contact": ("request_contact", "respond_contact", "list_contacts", "set_contact_policy"),
    "search": ("search_messages", "summarize_thread", "summarize_recent", "fetch_summary"),
    "file_reservations": (
        "file_reservation_paths",
        "release_file_reservations",
        "renew_file_reservations",
        "force_release_file_reservation",
    ),
    "workflow_macros": (
        "macro_start_session",
        "macro_prepare_thread",
        "macro_file_reservation_cycle",
        "macro_contact_handshake",
    ),
    # gated: registered only with WORKTREES_ENABLED or GIT_IDENTITY_ENABLED (the reference's gate)
    "build_slots": ("acquire_build_slot", "renew_build_slot", "release_build_slot"),
    "product_bus": (
        "ensure_product",
        "products_link",
        "search_messages_product",
        "fetch_inbox_product",
        "summarize_thread_product",
    ),
}


# One line per cluster for the tooling directory.
PURPOSES: dict[str, str] = {
    "infrastructure": "Server health, projects and the git pre-commit guard.",
    "identity": "Register, look up and retire agent identities.",
    "messaging": "Send, read, wait for and acknowledge threaded mail.",
    "contact": "Contact requests and policies that decide who may write to whom.",
    "search": "Search and summarise persisted mail.",
    "file_reservations": "Advisory reservations of files before editing them.",
    "workflow_macros": "One-call bundles of the common sequences.",
    "build_slots": "Advisory leases that make agents take turns at a build or other shared step.",
    "product_bus": "Products grouping projects, and mail reads across them.",
}

# How often an agent typically calls a cluster's tools, for the directory.
FREQUENCY: dict[str, str] = {
    "infrastructure": "once per session",
    "identity": "once per session",
    "messaging": "frequent",
    "contact": "occasional",
    "search": "occasional",
    "file_reservations": "per task",
    "workflow_macros": "once per session or task",
    "build_slots": "per build",
    "product_bus": "occasional",
}

# Typical sequences, for the directory's playbooks (tools not registered are left out).
PLAYBOOKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Start a session", ("ensure_project", "register_agent", "fetch_inbox")),
    ("Start a session in one call", ("macro_start_session",)),
    ("Work on a shared item", ("file_reservation_paths", "send_message", "release_file_reservations")),
    ("Answer mail", ("fetch_inbox", "reply_message", "acknowledge_message")),
    ("Wait for mail", ("wait_for_mail", "mark_message_read")),
    ("Reach an agent that refuses mail", ("request_contact", "respond_contact", "send_message")),
    ("Catch up on a thread", ("summarize_thread", "fetch_topic", "search_messages")),
    ("Take turns at the build", ("acquire_build_slot", "renew_build_slot", "release_build_slot")),
    ("Read across a product's repositories", ("ensure_product", "products_link", "fetch_inbox_product")),
)

TOOL_CLUSTER: dict[str, str] = {tool: cluster for cluster, tools in CLUSTERS.items() for tool in tools}
KNOWN_CLUSTERS: tuple[str, ...] = tuple(CLUSTERS)


def cluster_of(tool: str) -> str | None:
    return TOOL_CLUSTER.get(tool)
