"""Every Redis key the broker uses, built in one place.

All keys of one project carry the hash tag ``{<slug>}`` so that each Lua script touches a
single cluster slot (DESIGN decision 1). ``<p>`` is the configurable key prefix.

Global keys
    <p>:projects                 HASH slug -> human_key (directory used for listing and hints)
    <p>:slugs                    HASH slug -> human_key of every slug ever assigned (its owner never
                                 changes, even after hard_delete_project: slugs never collide)
    <p>:ids:<kind>               STRING counters for broker-wide integer ids
    <p>:doorbell                 pub/sub channel; one event per delivered recipient
    <p>:persist:stats            HASH messages, commits written by the persistence workers (metrics)

Per project (``<p>:{<slug>}:`` is the project prefix that scripts receive in ARGV)
    project                      HASH id, slug, human_key, created_at
    agents                       HASH lower(name) -> agent JSON (with the SHA-256 digest of its token;
                                 the token itself is never stored)
    active                       HASH name -> last_active_ts (ISO); kept apart so sends stay cheap
    bodies                       HASH message id -> body_md (one HMGET reads a page of bodies)
    msg:<id>                     HASH head (inbox-item JSON without kind/body),
                                 sender (lower name), recipients (JSON {to,cc,bcc} of names),
                                 created_us, rk:<lower> kind, rt:<lower> read_ts, at:<lower> ack_ts,
                                 hk:<lower> kind held for a contact approval, dc:<lower> inbox
                                 entry id of a held message delivered on approval
    inbox:<lower>                STREAM per recipient: m=id f="<created_us>|<urgent>|<topic>"
                                 j=inbox-item JSON (head + kind), b=body when at most 2 KiB
                                 (so a page of the inbox, bodies included, is one XREVRANGE)
    urgent:<lower>               ZSET received high/urgent message ids by created_us
    rtopic:<lower>:<topic>       ZSET received message ids with that (lower-cased) topic
    stopic:<lower>:<topic>       ZSET sent message ids with that topic
    outbox:<lower>               STREAM per sender: m=id c=created_us
    unread:<lower>               SET of message ids not yet read by that agent
    thread:<thread_id>           ZSET message id scored by created_us
    res:<id>, res:index, res:buckets, res:expiry, res:all, res:ended, res:agent:<lower>
                                 file reservations; documented in broker/scripts/lib/reservations.lua
    links:<lower>                HASH contact links of that agent: "out:<slug>#<lower>" (it asked to write
                                 to that agent) and "in:<slug>#<lower>" (that agent asked to write to it)
                                 -> link JSON; each link is kept in both endpoints' projects
                                 (documented in broker/scripts/lib/contacts.lua)
    held:<lower>:<slug>#<lower>  ZSET message ids held for the first agent until it approves the
                                 sender (second), scored by the hold's deadline in microseconds
    idem:<slug>#<lower>:<key>    STRING a send's idempotency record: the SHA-256 hex of what was sent, then
                                 the send script's reply JSON; one per (sender, key) in each target
                                 project, expiring after IDEMPOTENCY_WINDOW_SECONDS (send_message.lua)
    tpart:<thread_id>            SET of the thread's participants (lower names; "project:<slug>#<lower>"
                                 for senders of other projects), for contacts_only
    mailact                      HASH lower(name) -> ms of the agent's last read or ack (staleness)
    hookcursor:<lower>           STRING inbox stream id of the newest entry `broker hook check-inbox`
                                 has looked at for that agent (so a hook never shows mail twice)
    windows                      HASH window_uuid -> window identity JSON (id, window_uuid, display_name,
                                 created_ts, last_active_ts, expires_ts); windows:seq STRING its ids
    pending                      ZSET "<kind>:<id>[:<name>]" scored by ms: the transactional
                                 outbox drained by the persistence worker (DESIGN decision 4)
    pending:flag                 STRING "a drain job is scheduled" (SET NX with a short TTL by the
                                 scripts that add to pending; deleted by the job when it starts)
    pending:inflight             ZSET members a drain job claimed, scored by claim time in ms;
                                 removed once in Git and SQLite, re-queued by the reconciler if aged
                                 (an entry whose write failed is back in pending scored by the time of
                                 its next try, so a drain claims only members scored up to now)
    pending:attempts             HASH member -> failed tries so far (deleted once it is written)
    deadletter                   ZSET members that failed PERSIST_MAX_ATTEMPTS tries, scored by ms
                                 when dead-lettered; `broker dead-letters retry` puts them back
    deadletter:info              HASH member -> JSON {attempts, error, dead_at} of its last failure

Agent names are case-insensitive, so per-agent keys use the lower-cased name.
The Lua side builds the ``msg:``, ``inbox:``... keys from the project prefix with the same
suffixes (``pkey()`` in ``broker/scripts/lib/common.lua``); change both together.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass


def slugify(value: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", value.strip().lower()).strip("-")
    return slug or "project"


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", ".")) or "/" in value or "\\" in value


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
    def doorbell(self) -> str:
        return f"{self.prefix}:doorbell"

    @property
    def persist_stats(self) -> str:
        """HASH messages, commits: totals written by every persistence worker (for /metrics)."""
        return f"{self.prefix}:persist:stats"

    @property
    def persist_queue(self) -> str:
        """Name of the rq queue of drain jobs (rq builds its own keys from it)."""
        return f"{self.prefix}-persist"

    # -- per project --------------------------------------------------------------------
    def project_prefix(self, slug: str) -> str:
        return f"{self.prefix}:{{{slug}}}:"

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

    # -- mail
    def recipient_kind_field(self, name: str) -> str:
        """Field of a msg:<id> hash: the recipient's kind ("to", "cc", "bcc"), absent for others."""
        return f"rk:{name.lower()}"
