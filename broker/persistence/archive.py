"""The Git archive: one repository of Markdown and JSON files, in the reference's layout.

    projects/<slug>/agents/<Name>/profile.json
    projects/<slug>/agents/<Name>/{inbox,outbox}/YYYY/MM/<file>.md
    projects/<slug>/messages/YYYY/MM/<file>.md          (canonical copy)
    projects/<slug>/messages/threads/<thread_id>.md     (digest)
    projects/<slug>/file_reservations/{<sha1>,id-<id>}.json
    projects/<slug>/attachments/<sha1[:2]>/<sha1>.webp, originals/<sha1[:2]>/<sha1>.<ext>,
        _manifests/<sha1>.json                          (staged by the send: attachments.py)

``<file>`` is ``<created %Y-%m-%dT%H-%M-%SZ>__<subject slug>__<id>.md``; a message file is
``---json`` front matter then the body. BCC names appear only in the sender's outbox copy and
in each BCC recipient's own copy (listing just that recipient), not in the canonical copy or
other recipients' copies (the reference writes the full BCC list into every copy).

The repository at ARCHIVE_ROOT is bare: commits are written with ``git fast-import`` straight
into the object store, one commit per drained batch, with no work tree to write file by file
and no index to rewrite: a commit costs what it adds plus rewriting the trees of the
directories it touches (the flat month directories grow over a month). Browse it with
``git clone <ARCHIVE_ROOT>`` or ``git --git-dir <ARCHIVE_ROOT> show main:<path>``.
Every file's content is a function of the stored record, and a digest entry is appended only
when its canonical link is not there yet, so replaying a batch changes nothing and commits
nothing. A lock per repository (a thread lock plus ``flock`` across processes) serialises
writers.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import git

from broker.config import Settings
from broker.persistence import attachments as staged
from broker.persistence.private import private_dir, private_file

log = logging.getLogger(__name__)

BRANCH = "main"
SHARED = "0600"  # core.sharedRepository: files 0600, directories 0700
# fast-import builds each commit on this ref; the branch moves to it only if the tree changed
STAGING_REF = "refs/broker/staging"
DIGEST_LINK = re.compile(r"\[View canonical\]\(([^)]+)\)")
AUTHOR_NAME = "mcp-agent"
AUTHOR_EMAIL = "mcp-agent@example.com"
CONFIG = (
    ("core", "sharedRepository", SHARED),
    ("commit", "gpgsign", "false"),
    ("user", "name", AUTHOR_NAME),
    ("user", "email", AUTHOR_EMAIL),
)
DIGEST_BODY_CHARS = 1200
SUMMARY_LINES = 20
# Most bytes of attachment files one commit carries (see _attachment_files).
ATTACHMENT_COMMIT_BYTES = 64 * 1024 * 1024

_repo_locks: dict[Path, threading.Lock] = {}
_repo_locks_guard = threading.Lock()


def subject_slug(subject: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9._-]+", "-", subject or "").strip("-_").lower()[:80]
    return slug or "message"


def _created(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _quote_path(rel: str) -> bytes:
    """A path as fast-import reads it: C-style quoted when it holds a quote, backslash or LF."""
    if any(c in rel for c in '"\\\n') or rel.startswith('"'):
        escaped = rel.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'.encode()
    return rel.encode()


@dataclass
class ArchiveMessage:
    """One message as archived: its header fields, body and recipients by kind."""

    id: int
    subject: str
    body_md: str
    sender: str
    created: str
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    thread_id: str | None = None
    importance: str = "normal"
    ack_required: bool = False
    attachments: list[Any] = field(default_factory=list)
    # from_project, from_project_slug, from_address when the sender belongs to another project
    # (its front matter carries them, and it has no outbox copy here)
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property  # asked for each copy of the message
    def when(self) -> datetime:
        return _created(self.created)

    @cached_property  # asked for each copy of the message
    def filename(self) -> str:
        return f"{self.when.astimezone(UTC).strftime('%Y-%m-%dT%H-%M-%SZ')}__{subject_slug(self.subject)}__{self.id}.md"

    @cached_property  # asked for each copy of the message
    def month_dir(self) -> str:
        return self.when.astimezone(UTC).strftime("%Y/%m")


@dataclass
class BatchCommit:
    """What ``Archive.write_batch_detailed`` committed: the sha (None when the archive already
    held everything), the commit's summary line and author time as ``git log`` shows them
    (``%s``, ``%aI``), and message id -> the canonical file this commit added."""

    sha: str | None
    summary: str
    authored_ts: str
    added: dict[int, bytes]


def commit_subject(message: str) -> str:
    """A commit message's subject as ``git log --format=%s`` prints it: its first paragraph,
    lines joined by spaces."""
    first = message.strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in first.splitlines())


class Archive:
    """The archive repository; ``slug`` selects the project directory the seed API writes to."""

    def __init__(self, root: Path, slug: str, human_key: str | None = None, staging: Path | None = None) -> None:
        self.root = Path(root)
        self.slug = slug
        self.human_key = human_key or slug
        # where sends stage attachment files (Settings.attachments_staging_path); None: no
        # attachment files are committed
        self.staging = staging
        self.repo: git.Repo | None = None

    def project_rel(self, slug: str | None = None) -> str:
        return f"projects/{slug or self.slug}"

    # -- repository and locking ---------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _repo_locks_guard:
            lock = _repo_locks.setdefault(self.root.resolve(), threading.Lock())
        with lock:
            private_dir(self.root)  # the archive holds every message: owner-only, like Redis
            with open(private_file(self.root / "broker-archive.lock"), "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure(self) -> Archive:
        """Create the repository (with a first commit) if missing."""
        with self._locked():
            self._open()
        return self

    def _open(self) -> git.Repo:
        if self.repo is not None:
            return self.repo
        # a config.lock left by a writer killed mid-init would fail the config write below; we
        # hold the archive lock, so no git process of ours is running
        (self.root / "config.lock").unlink(missing_ok=True)
        # HEAD is among the first files `git init` writes: a writer killed during the init leaves
        # it without objects/ or refs/, which `git init` again completes (it is safe to re-run)
        if (self.root / "HEAD").exists() and git.repo.fun.is_git_dir(self.root):
            repo = git.Repo(self.root)
        else:
            # core.sharedRepository=0600: git makes every file it writes later (objects, packs,
            # refs, by any writer and whatever its umask) 0600, and directories 0700
            repo = git.Repo.init(self.root, bare=True, initial_branch=BRANCH, shared=SHARED)
        # the settings an init cut short, or an archive made before one was set, lacks; read raw
        # (get_value turns "0600" into 600), so an archive that has them is not rewritten
        config = repo.config_reader("repository")
        missing = [(s, o, v) for s, o, v in CONFIG if not config.has_option(s, o) or config.get(s, o) != v]
        if missing:
            with repo.config_writer() as writer:
                for section, option, value in missing:
                    writer.set_value(section, option, value)
        self.repo = repo
        if not self._head():
            self._commit({".gitattributes": b"*.json text\n*.md text\n"}, "chore: initialize archive")
        return repo

    def _git(self, *args: str, stdin: bytes | None = None) -> bytes:
        done = subprocess.run(
            ["git", "--git-dir", str(self.root), *args], input=stdin, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise git.GitCommandError(["git", *args], done.returncode, done.stderr)
        return done.stdout

    def _head(self) -> str | None:
        try:
            return self._git("rev-parse", "--verify", "-q", f"refs/heads/{BRANCH}").decode().strip() or None
        except git.GitCommandError:
            return None

    def _heal_stale_git_locks(self) -> None:
        """Remove ref locks a killed writer left behind. Safe: every writer holds the archive
        lock while it runs git, and we hold it now, so no git process of ours is running."""
        for lock in (self.root / "packed-refs.lock", *self.root.glob("refs/**/*.lock")):
            if lock.exists():
                log.warning("removing stale git lock %s (a writer died mid-commit)", lock)
                lock.unlink(missing_ok=True)

    def read_files(self, rel_paths: Sequence[str]) -> dict[str, str | None]:
        """The committed text of each path at HEAD (None when absent), in one git call."""
        if not rel_paths:
            return {}
        head = self._head()
        if head is None:
            return dict.fromkeys(rel_paths)
        request = "".join(f"{head}:{rel}\n" for rel in rel_paths).encode()
        out = self._git("cat-file", "--batch", stdin=request)
        found: dict[str, str | None] = {}
        position = 0
        for rel in rel_paths:
            line_end = out.index(b"\n", position)
            header = out[position:line_end].split()
            position = line_end + 1
            if header[-1] == b"missing":
                found[rel] = None
                continue
            size = int(header[2])
            found[rel] = out[position : position + size].decode("utf-8")
            position += size + 1
        return found

    def existing(self, rel_paths: Sequence[str]) -> set[str]:
        """Which of these paths HEAD holds (none before the first commit): one listing of their
        directories, far cheaper than looking each path up when they are many."""
        with self._locked():
            self._open()
            head = self._head()
            if head is None or not rel_paths:
                return set()
            dirs = sorted({rel.rsplit("/", 1)[0] + "/" for rel in rel_paths})
            listed: set[str] = set()
            for start in range(0, len(dirs), 200):
                out = self._git("ls-tree", "--name-only", "-z", head, "--", *dirs[start : start + 200])
                listed.update(out.decode("utf-8").split("\0"))
        return listed.intersection(rel_paths)

    def _commit(self, files: dict[str, bytes], message: str, deletions: Sequence[str] = ()) -> str | None:
        """Commit these files on top of HEAD with one ``git fast-import`` run: blobs go straight
        into the object store (no work tree, no index to rewrite), identical contents are
        stored once. The commit is built on a staging ref and the branch moves to it only when
        its tree differs from HEAD's, so a replayed batch commits nothing; returns the new
        commit or None. (Asking git which paths changed first costs a tree walk per path.)"""
        return self._commit_at(files, message, deletions)[0]

    def _commit_at(
        self, files: dict[str, bytes], message: str, deletions: Sequence[str] = ()
    ) -> tuple[str | None, str | None, int]:
        """``_commit``, also returning the HEAD it was built on and its author time (seconds)."""
        if not files and not deletions:
            return None, None, 0
        self._heal_stale_git_locks()
        head = self._head()
        marks: dict[bytes, int] = {}
        stream = bytearray()
        for content in files.values():
            if content not in marks:
                marks[content] = len(marks) + 1
                stream += b"blob\nmark :%d\ndata %d\n" % (marks[content], len(content)) + content + b"\n"
        text = message.encode()
        stream += b"commit %s\n" % STAGING_REF.encode()
        when = int(time.time())
        for role in (b"author", b"committer"):
            stream += b"%s %s <%s> %d +0000\n" % (role, AUTHOR_NAME.encode(), AUTHOR_EMAIL.encode(), when)
        stream += b"data %d\n" % len(text) + text + b"\n"
        if head:
            stream += b"from %s\n" % head.encode()
        for rel in deletions:
            stream += b"D %s\n" % _quote_path(rel)
        for rel, content in files.items():
            stream += b"M 100644 :%d %s\n" % (marks[content], _quote_path(rel))
        stream += b"\n"
        # --force: a staging ref left by a killed writer is simply overwritten
        self._git("fast-import", "--quiet", "--force", stdin=bytes(stream))
        if head:
            commit, tree, head_tree = self._git(
                "rev-parse", STAGING_REF, f"{STAGING_REF}^{{tree}}", f"{head}^{{tree}}"
            ).split()
            if tree == head_tree:
                return None, head, when  # a replay: every file was already committed with this content
        else:
            commit = self._git("rev-parse", STAGING_REF).strip()
        self._git("update-ref", f"refs/heads/{BRANCH}", commit.decode(), *([head] if head else []))
        return commit.decode(), head, when

    def remove_paths(self, paths: Sequence[str], message: str, keep: str = "projects") -> tuple[int, int]:
        """Remove these files and directories (with everything under them) in one commit, for the
        hard deletes; returns (files removed, directories that no longer exist). Directories are
        counted below ``keep`` (which itself is never counted). Paths already gone are skipped,
        so a repeated call removes and commits nothing."""
        if not (self.root / "HEAD").exists():
            return 0, 0
        with self._locked():
            self._open()
            head = self._head()
            if head is None:
                return 0, 0
            existing: list[str] = []
            for start in range(0, len(paths), 200):
                out = self._git("ls-tree", "-r", "-z", "--name-only", head, "--", *paths[start : start + 200])
                existing += [rel for rel in out.decode("utf-8").split("\0") if rel]
            if not existing:
                return 0, 0
            dirs: set[str] = set()
            for rel in existing:
                parent = rel.rsplit("/", 1)[0]
                while "/" in parent and parent != keep and parent.startswith(keep + "/"):
                    dirs.add(parent)
                    parent = parent.rsplit("/", 1)[0]
            self._commit({}, message, deletions=existing)
            candidates = sorted(dirs)
            out = self._git("cat-file", "--batch-check", stdin="".join(f"HEAD:{d}\n" for d in candidates).encode())
            gone = sum(1 for line in out.decode("utf-8").splitlines() if line.endswith(" missing"))
            return len(existing), gone

    def commits(self, max_count: int = 5) -> list[git.Commit]:
        with self._locked():
            repo = self._open()
            return list(repo.iter_commits(BRANCH, max_count=max_count))

    # -- files --------------------------------------------------------------------------
    def _message_text(self, msg: ArchiveMessage, slug: str, human_key: str, bcc: list[str]) -> bytes:
        front = {
            "id": msg.id,
            "thread_id": msg.thread_id,
            "project": human_key,
            "project_slug": slug,
            "from": msg.sender,
            "to": msg.to,
            "cc": msg.cc,
            "bcc": bcc,
            "subject": msg.subject,
            "importance": msg.importance,
            "ack_required": msg.ack_required,
            "created": msg.created,
            "attachments": msg.attachments,
            **msg.extra,
        }
        text = "---json\n" + json.dumps(front, indent=2, sort_keys=True) + "\n---\n\n" + msg.body_md.strip() + "\n"
        return text.encode("utf-8")

    def _add_message(self, msg: ArchiveMessage, slug: str, human_key: str, files: dict[str, bytes]) -> str:
        """Add the message's copies to ``files``; returns the canonical path."""
        base = self.project_rel(slug)
        canonical = f"{base}/messages/{msg.month_dir}/{msg.filename}"
        # Only the sender's and each BCC recipient's copies name BCC recipients.
        public = self._message_text(msg, slug, human_key, [])
        files[canonical] = public
        if not msg.extra.get("from_address"):
            files[f"{base}/agents/{msg.sender}/outbox/{msg.month_dir}/{msg.filename}"] = (
                self._message_text(msg, slug, human_key, msg.bcc) if msg.bcc else public
            )
        for name in dict.fromkeys(msg.to + msg.cc + msg.bcc):
            copy = self._message_text(msg, slug, human_key, [name]) if name in msg.bcc else public
            files[f"{base}/agents/{name}/inbox/{msg.month_dir}/{msg.filename}"] = copy
        return canonical

    def write_batch(
        self,
        *,
        profiles: Sequence[tuple[str, dict[str, Any]]] = (),
        messages: Sequence[tuple[str, str, ArchiveMessage]] = (),
        reservations: Sequence[tuple[str, dict[str, Any]]] = (),
        summary: str | None = None,
    ) -> str | None:
        """Write a batch as one commit. ``profiles``: (slug, agent dict); ``messages``:
        (slug, human_key, message); ``reservations``: (slug, reservation record). Returns the
        commit's sha, or None when the archive already held all of it."""
        return self.write_batch_detailed(
            profiles=profiles, messages=messages, reservations=reservations, summary=summary
        ).sha

    def write_batch_detailed(
        self,
        *,
        profiles: Sequence[tuple[str, dict[str, Any]]] = (),
        messages: Sequence[tuple[str, str, ArchiveMessage]] = (),
        reservations: Sequence[tuple[str, dict[str, Any]]] = (),
        summary: str | None = None,
    ) -> BatchCommit:
        """``write_batch``, telling which messages' canonical files its commit added (with their
        contents), so the worker can index each message's commit (broker/persistence/commit_rows.py)."""
        with self._locked():
            self._open()
            files: dict[str, bytes] = {}
            for slug, agent in profiles:
                files[f"{self.project_rel(slug)}/agents/{agent['name']}/profile.json"] = _json_bytes(agent)
            threaded: list[tuple[str, ArchiveMessage, str]] = []
            canonical: dict[int, str] = {}
            for slug, human_key, msg in messages:
                canonical[msg.id] = self._add_message(msg, slug, human_key, files)
                if msg.thread_id:
                    threaded.append(
                        (f"{self.project_rel(slug)}/messages/threads/{msg.thread_id}.md", msg, canonical[msg.id])
                    )
            for slug, record in reservations:
                base = f"{self.project_rel(slug)}/file_reservations"
                pattern_sha = hashlib.sha1(record["path_pattern"].encode()).hexdigest()
                files[f"{base}/{pattern_sha}.json"] = _json_bytes(record)
                files[f"{base}/id-{record['id']}.json"] = _json_bytes(record)
            files.update(self._digests(threaded))
            attached = self._attachment_files(messages)
            files.update(attached)
            text = summary or _batch_summary(profiles, messages, reservations)
            commit, parent, when = self._commit_at(files, text)
            if self.staging is not None:
                staged.discard(self.staging, attached)  # committed (or already in HEAD)
            added: dict[int, bytes] = {}
            if commit is not None and canonical:
                new = self._added(parent, commit, list(canonical.values()))
                added = {mid: files[rel] for mid, rel in canonical.items() if rel in new}
            return BatchCommit(commit, commit_subject(text), datetime.fromtimestamp(when, UTC).isoformat(), added)

    def _added(self, parent: str | None, commit: str, rels: list[str]) -> set[str]:
        """Which of these paths ``commit`` added (all of them on the first commit): one tree diff,
        which walks only the directories the commit changed."""
        if parent is None:
            return set(rels)
        out = self._git("diff-tree", "-r", "-z", "--no-renames", "--diff-filter=A", "--name-only", parent, commit)
        return set(out.decode("utf-8").split("\0")).intersection(rels)

    def _attachment_files(self, messages: Sequence[tuple[str, str, ArchiveMessage]]) -> dict[str, bytes]:
        """The staged attachment files the batch's messages name. A file not staged was
        committed by an earlier batch (and removed from staging); one in neither place is
        reported and the message committed without it."""
        if self.staging is None:
            return {}
        rels = list(dict.fromkeys(rel for _, _, msg in messages for rel in staged.message_files(msg.attachments)))
        if not rels:
            return {}
        found: dict[str, bytes] = {}
        missing: list[str] = []
        size = 0
        for rel in rels:
            content = staged.read_staged(self.staging, rel)
            if content is None:
                missing.append(rel)
                continue
            if found and size + len(content) > ATTACHMENT_COMMIT_BYTES:
                # a batch of large attachments is committed in parts before its messages, so a
                # drain holds a bounded amount of file bytes in memory
                self._commit(found, f"attachments: {len(found)} files")
                staged.discard(self.staging, found)
                found, size = {}, 0
            found[rel] = content
            size += len(content)
        if missing and self._head():
            out = self._git("cat-file", "--batch-check", stdin="".join(f"HEAD:{rel}\n" for rel in missing).encode())
            for rel, line in zip(missing, out.decode().splitlines(), strict=True):
                if line.endswith(" missing"):
                    log.warning("attachment %s is neither staged nor archived; its message is archived without it", rel)
        return found

    def _digests(self, threaded: list[tuple[str, ArchiveMessage, str]]) -> dict[str, bytes]:
        """Thread digests with this batch's messages appended, each once: a message whose
        canonical link is already in the committed digest is not appended again."""
        current = self.read_files(list(dict.fromkeys(rel for rel, _, _ in threaded)))
        texts: dict[str, str] = {}
        links: dict[str, set[str]] = {}
        for rel, msg, canonical in threaded:
            if rel not in texts:
                texts[rel] = current.get(rel) or f"# Thread {msg.thread_id}\n\n"
                links[rel] = set(DIGEST_LINK.findall(texts[rel]))
            if canonical in links[rel]:
                continue
            links[rel].add(canonical)
            body = msg.body_md.strip()
            if len(body) > DIGEST_BODY_CHARS:
                body = body[:DIGEST_BODY_CHARS] + "\n..."
            arrow = ", ".join(msg.to + msg.cc)
            texts[rel] += (
                f"### {msg.subject}\n\n## {msg.created} — {msg.sender} → {arrow}\n\n"
                f"[View canonical]({canonical})\n\n{body}\n\n---\n\n"
            )
        return {rel: text.encode("utf-8") for rel, text in texts.items() if text != current.get(rel)}


def _batch_summary(
    profiles: Sequence[tuple[str, dict[str, Any]]],
    messages: Sequence[tuple[str, str, ArchiveMessage]],
    reservations: Sequence[tuple[str, dict[str, Any]]],
) -> str:
    lines = [f"mail: {m.sender} -> {', '.join(m.to + m.cc) or '(bcc only)'} | {m.subject}" for _, _, m in messages]
    lines += [f"agent: profile {a['name']}" for _, a in profiles]
    lines += [f"file_reservation: {r.get('agent')} {r['path_pattern']}" for _, r in reservations]
    if len(lines) == 1:
        return lines[0]
    head = f"batch: {len(messages)} messages, {len(profiles)} profiles, {len(reservations)} reservations"
    shown = lines[:SUMMARY_LINES]
    more = [f"- ... and {len(lines) - SUMMARY_LINES} more"] if len(lines) > SUMMARY_LINES else []
    return head + "\n\n" + "\n".join(f"- {line}" for line in shown) + ("\n" + more[0] if more else "")


def archive_root(settings: Settings) -> Path:
    return settings.archive_path


async def recent_commits(settings: Settings, limit: int, path: str | None = None) -> list[dict[str, str]]:
    """The archive's newest commits (whois ``recent_commits``; repository-wide as in the
    reference, or only those touching ``path``): ``[{hexsha (12 chars), summary, authored_ts}]``;
    [] before the first batch."""
    root = archive_root(settings)
    if not (root / "HEAD").exists():
        return []
    only = ["--", path] if path else []
    done = await asyncio.create_subprocess_exec(
        "git", "--git-dir", str(root), "log", f"-{limit}", "--format=%H%x00%s%x00%aI", BRANCH, *only,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await done.communicate()
    commits = []
    for line in out.decode().splitlines():
        sha, summary, authored = line.split("\0")
        commits.append({"hexsha": sha[:12], "summary": summary, "authored_ts": authored})
    return commits


# -- the seed's API: async, one commit per call ------------------------------------------
async def ensure_archive(settings: Settings, slug: str) -> Archive:
    """The archive of a project, created with its repository if missing."""
    return await asyncio.to_thread(Archive(archive_root(settings), slug).ensure)


async def write_agent_profile(archive: Archive, agent: dict[str, Any]) -> str | None:
    profile = {k: v for k, v in agent.items() if k not in ("registration_token", "token_hash")}
    return await asyncio.to_thread(
        archive.write_batch, profiles=[(archive.slug, profile)], summary=f"agent: profile {profile['name']}"
    )


async def write_message_bundle(
    archive: Archive,
    message: dict[str, Any],
    body_md: str,
    sender: str,
    recipients: Sequence[str],
    extra_paths: Sequence[str] | None = None,
    commit_text: str | None = None,
) -> str | None:
    """Write a message's canonical, outbox, inbox and digest files in one commit. ``recipients``
    are the ``to`` names unless ``message`` carries ``to``/``cc``/``bcc`` lists."""
    del extra_paths  # attachments are not archived yet
    msg = ArchiveMessage(
        id=int(message["id"]),
        subject=message.get("subject", ""),
        body_md=body_md,
        sender=sender,
        created=message.get("created") or message.get("created_ts") or datetime.now(UTC).isoformat(),
        to=list(message.get("to") or recipients),
        cc=list(message.get("cc") or []),
        bcc=list(message.get("bcc") or []),
        thread_id=message.get("thread_id"),
        importance=message.get("importance", "normal"),
        ack_required=bool(message.get("ack_required", False)),
        attachments=list(message.get("attachments") or []),
    )
    return await asyncio.to_thread(
        archive.write_batch, messages=[(archive.slug, archive.human_key, msg)], summary=commit_text
    )
