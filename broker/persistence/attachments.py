"""Attachment files between a send and the archive commit: the staging area.

send_message reads and converts attachments in the broker process (broker/mail/attachments.py)
and writes each file under ``<STORAGE_ROOT>/attachments/`` at the path it will have in the
archive (``projects/<slug>/attachments/<sha1[:2]>/<sha1>.webp``, ``originals/...``,
``_manifests/<sha1>.json``). Names are content addresses, so a file is written once however
many messages carry it, through a temporary file and a rename (a reader never sees half of
one). Redis carries only the metadata, which names these paths. The persistence worker reads
the staged files of a batch's messages, commits them with the messages (broker/persistence/
archive.py) and removes them; a file already committed and removed is found in Git instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from broker.persistence.private import private_dir

# The only paths a message's metadata may name (the worker reads them from disk): a content
# address under a project's attachments directory.
STAGED_PATH = re.compile(
    r"^projects/[A-Za-z0-9._-]+/attachments/(?:originals/)?[0-9a-f]{2}/[0-9a-f]{40}\.[a-z0-9]{1,10}$"
    r"|^projects/[A-Za-z0-9._-]+/attachments/_manifests/[0-9a-f]{40}\.json$"
)


def project_attachments(slug: str) -> str:
    return f"projects/{slug}/attachments"


def file_rel(slug: str, sha1: str, ext: str) -> str:
    return f"{project_attachments(slug)}/{sha1[:2]}/{sha1}.{ext}"


def original_rel(slug: str, sha1: str, ext: str) -> str:
    return f"{project_attachments(slug)}/originals/{sha1[:2]}/{sha1}.{ext}"


def manifest_rel(slug: str, sha1: str) -> str:
    return f"{project_attachments(slug)}/_manifests/{sha1}.json"


def stage(root: Path, rel: str, content: bytes) -> None:
    """Write ``content`` at ``root/rel`` unless a file is there already (same name, same
    content: names are content addresses)."""
    if not STAGED_PATH.match(rel):
        raise ValueError(f"not an attachment path: {rel}")
    target = root / rel
    if target.exists():
        return
    private_dir(target.parent)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".staging-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def message_files(attachments: Iterable[Any]) -> list[str]:
    """The archive paths of the files a message's attachment metadata names (file attachments:
    the file, its original when kept, its manifest); inline ones have none."""
    found: list[str] = []
    for meta in attachments:
        if not isinstance(meta, dict) or meta.get("type") != "file" or not meta.get("path"):
            continue
        slug = str(meta["path"]).split("/")[1]
        for rel in (meta["path"], meta.get("original_path"), manifest_rel(slug, str(meta.get("sha1", "")))):
            if isinstance(rel, str) and STAGED_PATH.match(rel) and rel not in found:
                found.append(rel)
    return found


def read_staged(root: Path, rel: str) -> bytes | None:
    """The staged content of a path, None when it is not staged (committed and removed
    already, or lost)."""
    try:
        return (root / rel).read_bytes()
    except FileNotFoundError:
        return None


def discard(root: Path, rels: Iterable[str]) -> None:
    """Remove staged files once committed."""
    for rel in rels:
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()
