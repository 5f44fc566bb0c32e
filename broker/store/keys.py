"""Every Redis key the broker uses, built in one place.

All keys of one project carry the hash tag ``{<slug>}`` so that each Lua script touches a
single cluster slot (docs/architecture.md, decision 1). ``<p>`` is the configurable key prefix.
What each key holds (type, fields, members, who writes it) is documented once, in
docs/data-model.md; the Lua scripts build per-project keys with the same suffixes (``pkey()`` in
lib/common.lua), and tests/test_script_keys.py checks that every one of them is declared here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import ClassVar


def slugify(value: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", value.strip().lower()).strip("-")
    return slug or "project"


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", ".")) or "/" in value or "\\" in value


def is_outgoing_link(field: str) -> bool:
    """Whether a ``links:<lower>`` field is the owner's own request ("out:<slug>#<lower>"),
    not a copy of a request made to it ("in:<slug>#<lower>")."""
    return field.startswith("out:")


def receipt_fields(name: str) -> tuple[str, str, str]:
    """A recipient's fields of a msg:<id> HASH: its kind, read_ts and ack_ts (rk:, rt:, at:)."""
    lower = name.lower()
    return f"rk:{lower}", f"rt:{lower}", f"at:{lower}"


def delivered_cursor_field(name: str) -> str:
    """A recipient's field of a msg:<id> HASH: the inbox entry id of a message held for a contact
    approval, then delivered (dc:)."""
    return f"dc:{name.lower()}"


def slug_candidates(human_key: str) -> list[str]:
    """The slugs a project's human_key (an absolute, normalized path) may get, in order: the
    plain slug, then the plain slug with a short, then a long, hash of the full key. Paths that
    slugify alike (/x/my-repo, /x/my/repo, /x/My_Repo) get distinct slugs (broker/identity/slugs.py)."""
    plain = slugify(human_key)
    digest = hashlib.sha256(human_key.encode("utf-8", "surrogatepass")).hexdigest()
    return [plain, f"{plain}-{digest[:8]}", f"{plain}-{digest[:32]}"]


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "am"

    # -- global -------------------------------------------------------------------------
    @property
    def projects(self) -> str:
        return f"{self.prefix}:projects"

    @property
    def slug_owners(self) -> str:
        return f"{self.prefix}:slugs"

    def ids(self, kind: str) -> str:
        return f"{self.prefix}:ids:{kind}"

    @property
    def persist_stats(self) -> str:
        """HASH messages, commits: totals written by every persistence worker (for /metrics)."""
        return f"{self.prefix}:persist:stats"

    @property
    def persist_queue(self) -> str:
        """Name of the rq queue of drain jobs (rq builds its own keys from it)."""
        return f"{self.prefix}-persist"

    # -- products (global: the product bus; one hash tag no slug can have) ----------------
    @property
    def products_prefix(self) -> str:
        """``<p>:{#products}:``: every product key shares this tag ('#' is never in a slug), so
        ensure_product.lua reads and writes one cluster slot, and no project's keys are its."""
        return f"{self.prefix}:{{#products}}:"

    @property
    def products(self) -> str:
        """HASH product_uid -> product JSON {id, product_uid, name, created_at}."""
        return self.products_prefix + "byuid"

    @property
    def product_names(self) -> str:
        """HASH name -> product_uid."""
        return self.products_prefix + "byname"

    @property
    def product_seq(self) -> str:
        """STRING the last product id given."""
        return self.products_prefix + "seq"

    def product_links(self, product_uid: str) -> str:
        """HASH slug -> project id of the projects linked to a product (a link counts only while
        that project still has that id: see broker/identity/products.py)."""
        return f"{self.products_prefix}links:{product_uid}"

    # -- per project --------------------------------------------------------------------
    def project_prefix(self, slug: str) -> str:
        return f"{self.prefix}:{{{slug}}}:"

    def doorbell(self, slug: str) -> str:
        """The project's shard channel (SPUBLISH/SSUBSCRIBE): a doorbell reaches only the node that
        owns the project's slot, and only the broker processes waiting on that project."""
        return self.project_prefix(slug) + "doorbell"

    def project(self, slug: str) -> str:
        return self.project_prefix(slug) + "project"

    def agents(self, slug: str) -> str:
        return self.project_prefix(slug) + "agents"

    def active(self, slug: str) -> str:
        return self.project_prefix(slug) + "active"

    def bodies(self, slug: str) -> str:
        return self.project_prefix(slug) + "bodies"

    def message(self, slug: str, message_id: int) -> str:
        return f"{self.project_prefix(slug)}msg:{message_id}"

    def inbox(self, slug: str, name: str) -> str:
        return f"{self.project_prefix(slug)}inbox:{name.lower()}"

    def outbox(self, slug: str, name: str) -> str:
        return f"{self.project_prefix(slug)}outbox:{name.lower()}"

    def urgent(self, slug: str, name: str) -> str:
        return f"{self.project_prefix(slug)}urgent:{name.lower()}"

    def received_topic(self, slug: str, name: str, topic: str) -> str:
        return f"{self.project_prefix(slug)}rtopic:{name.lower()}:{topic.lower()}"

    def sent_topic(self, slug: str, name: str, topic: str) -> str:
        return f"{self.project_prefix(slug)}stopic:{name.lower()}:{topic.lower()}"

    def unread(self, slug: str, name: str) -> str:
        return f"{self.project_prefix(slug)}unread:{name.lower()}"

    def thread(self, slug: str, thread_id: str) -> str:
        return f"{self.project_prefix(slug)}thread:{thread_id}"

    def hook_cursor(self, slug: str, name: str) -> str:
        return f"{self.project_prefix(slug)}hookcursor:{name.lower()}"

    def windows(self, slug: str) -> str:
        return self.project_prefix(slug) + "windows"

    def window_seq(self, slug: str) -> str:
        return self.project_prefix(slug) + "windows:seq"

    def links(self, slug: str, name: str) -> str:
        return f"{self.project_prefix(slug)}links:{name.lower()}"

    def held(self, slug: str, name: str, sender_slug: str, sender: str) -> str:
        return f"{self.project_prefix(slug)}held:{name.lower()}:{sender_slug}#{sender.lower()}"

    def idempotency(self, slug: str, sender_slug: str, sender: str, key: str) -> str:
        """The record of a send with ``key`` from ``sender`` (of ``sender_slug``) into project
        ``slug``; the sender part has no ':' (slugs and names never do), so keys cannot collide."""
        return f"{self.project_prefix(slug)}idem:{sender_slug}#{sender.lower()}:{key}"

    def thread_participants(self, slug: str, thread_id: str) -> str:
        return f"{self.project_prefix(slug)}tpart:{thread_id}"

    def pending(self, slug: str) -> str:
        return self.project_prefix(slug) + "pending"

    def cold(self, slug: str) -> str:
        """HASH of what the hot-window trimmer moved out of Redis (docs/data-model.md, "The hot
        window"): per-stream marks a read checks to know whether it must ask the index too."""
        return self.project_prefix(slug) + "cold"

    def warm(self, slug: str) -> str:
        """ZSET of ids of messages put back into Redis from the index for a write on them
        (restore_message.lua), by the µs they came back; cool_messages.lua removes them again."""
        return self.project_prefix(slug) + "warm"

    def reservation(self, slug: str, reservation_id: int | str) -> str:
        return f"{self.project_prefix(slug)}res:{reservation_id}"

    def rate_bucket(self, slug: str, name: str) -> str:
        """An agent's token bucket (lib/ratelimit.lua builds it as pkey(prefix, "rate:" .. lower))."""
        return f"{self.project_prefix(slug)}rate:{name.lower()}"

    def reservation_expiry(self, slug: str) -> str:
        return self.project_prefix(slug) + "res:expiry"

    def reservation_all(self, slug: str) -> str:
        return self.project_prefix(slug) + "res:all"

    def reservation_ended(self, slug: str) -> str:
        return self.project_prefix(slug) + "res:ended"

    def reservation_index(self, slug: str) -> str:
        return self.project_prefix(slug) + "res:index"

    def reservation_buckets(self, slug: str) -> str:
        return self.project_prefix(slug) + "res:buckets"

    def agent_reservations(self, slug: str, name: str) -> str:
        """HASH pattern -> id of the agent's live reservations (lib/reservations.lua)."""
        return f"{self.project_prefix(slug)}res:agent:{name.lower()}"

    def build_slot(self, slug: str, slot: str) -> str:
        """HASH "<lower agent> <branch>" -> lease JSON of a build slot (lib/build_slots.lua)."""
        return f"{self.project_prefix(slug)}slot:{slot}"

    def mail_activity(self, slug: str) -> str:
        return self.project_prefix(slug) + "mailact"

    def pending_flag(self, slug: str) -> str:
        # Lua derives it as KEYS[pending] .. ":flag" (mark_pending() in lib/common.lua)
        return self.pending(slug) + ":flag"

    def inflight(self, slug: str) -> str:
        return self.pending(slug) + ":inflight"

    def attempts(self, slug: str) -> str:
        return self.pending(slug) + ":attempts"

    def dead_letters(self, slug: str) -> str:
        return self.project_prefix(slug) + "deadletter"

    def dead_letter_info(self, slug: str) -> str:
        return self.dead_letters(slug) + ":info"

    # -- persistence
    # Field of rq's worker hash where workers.runner states its heartbeat interval in seconds.
    WORKER_BEAT_FIELD: ClassVar[str] = "beat_interval"

    @property
    def persist_workers(self) -> str:
        """rq's registry SET of the worker keys serving the drain queue (rq builds the name)."""
        from rq.worker_registration import WORKERS_BY_QUEUE_KEY  # rq only where it is used

        return WORKERS_BY_QUEUE_KEY % self.persist_queue

    # -- lifecycle ----------------------------------------------------------------------
    def project_pattern(self, slug: str) -> str:
        """SCAN pattern of every key of the project (hard_delete_project, rehydrate)."""
        return self.project_prefix(slug) + "*"

    def inboxes_pattern(self, slug: str) -> str:
        """SCAN pattern of the project's inbox streams."""
        return self.project_prefix(slug) + "inbox:*"


# -- lifecycle: formats that are not keys themselves (Keys' methods all build keys) ------------
# Per-project key suffixes only Redis holds, which `broker rehydrate --force` keeps: a retry's
# idempotency record, hook cursors, window identities, rate buckets, build slot leases.
KEPT_BY_REBUILD = ("idem:", "hookcursor:", "windows", "rate:", "slot:")
# What a rebuild cut short (no project hash) also keeps: the pending sets a drain still writes.
KEPT_BY_UNFINISHED_REBUILD = (*KEPT_BY_REBUILD, "pending", "deadletter")
HELD_SUFFIX = "held:"  # the suffix of every held:<lower>:<slug>#<lower> key


def inbox_suffix(name: str) -> str:
    """An inbox stream's key without the project prefix, as purge_messages.lua takes it."""
    return f"inbox:{name.lower()}"


def outbox_suffix(name: str) -> str:
    """An outbox stream's key without the project prefix, as purge_messages.lua takes it."""
    return f"outbox:{name.lower()}"


def link_field(direction: str, slug: str, name: str) -> str:
    """A links hash field: "out:<slug>#<lower>" or "in:<slug>#<lower>" (lib/contacts.lua)."""
    return f"{direction}:{slug}#{name.lower()}"


def parse_link_field(field_name: str) -> tuple[str, str, str]:
    """(direction, slug, lower name) of a links hash field."""
    direction, _, rest = field_name.partition(":")
    slug, _, lower = rest.rpartition("#")
    return direction, slug, lower


def foreign_participant(slug: str, name: str) -> str:
    """A message's sender, or a thread participant (tpart:), of another project."""
    return f"project:{slug}#{name.lower()}"
