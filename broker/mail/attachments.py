"""Attachments of a send: ``attachment_paths`` and the local images ``body_md`` references.

Everything here runs in the broker process before the send script, in a worker thread (Pillow
is CPU work): files are read from the project's directory (its human_key, on the broker's
host), images become WebP, and each file is staged on disk under its content address
(broker/persistence/attachments.py) for the persistence worker to commit. The message carries
only metadata, in the reference's shapes (docs/attachments.md):

    inline: {type: "inline", media_type: "image/webp", bytes, width, height, sha1, data_base64}
    file:   {type: "file", media_type, bytes, path, [width, height], sha1, [original_path]}
    a data: URI already in body_md: {type: "inline", media_type}

so no file's bytes pass through Lua or sit in Redis, except inline images, at most
INLINE_IMAGE_MAX_BYTES of them per message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import mimetypes
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from broker.errors import BrokerError
from broker.identity import refusals
from broker.persistence import attachments as staging
from broker.store.commands import identity as identity_store
from broker.store.commands import projects
from broker.store.refusals import Refusal
from broker.store.store import Store

MARKDOWN_IMAGE = re.compile(r'!\[(?P<alt>[^\]\n]*)\]\((?P<target>[^)\s]+)(?P<title>\s+"[^"\n]*")?\)')
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
SAFE_EXT = re.compile(r"^[a-z0-9]{1,10}$")
# Most attachments of one message (attachment_paths plus converted body images).
MAX_ATTACHMENTS = 20
# Larger images are refused before they are decoded (a small file can decode to a huge bitmap).
MAX_IMAGE_PIXELS = 50_000_000
WEBP_QUALITY = 80


@dataclass(frozen=True)
class Prepared:
    """What the send carries: the body with its image references rewritten, and the metadata."""

    body_md: str
    attachments: list[dict[str, Any]]


@dataclass
class _Job:
    """One message's attachment work, with the settings it needs (runs in a thread)."""

    slug: str
    project_dir: Path
    policy: str
    keep_originals: bool
    allow_absolute: bool
    max_bytes: int
    inline_left: int  # bytes of inline images the message may still carry
    staging_root: Path
    body_room: int = MAX_ATTACHMENTS  # attachments body images may add (attachment_paths come after)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    by_sha1: dict[str, dict[str, Any]] = field(default_factory=dict)


def check_paths(attachment_paths: object) -> list[str]:
    if attachment_paths is None:
        return []
    if not isinstance(attachment_paths, list) or not all(isinstance(p, str) for p in attachment_paths):
        raise BrokerError("INVALID_ARGUMENT", "attachment_paths must be a list of file paths (strings).")
    if len(attachment_paths) > MAX_ATTACHMENTS:
        raise BrokerError(
            "INVALID_ARGUMENT",
            f"attachment_paths has {len(attachment_paths)} files; a message carries at most {MAX_ATTACHMENTS}. "
            "Send them over several messages.",
        )
    return attachment_paths


async def prepare(
    store: Store,
    slug: str,
    project_key: str,
    sender_name: str,
    credentials: tuple[str, str],
    body_md: str,
    attachment_paths: list[str],
    convert_images: bool | None,
    broadcast: bool = False,
) -> Prepared:
    """The message's attachments: every ``attachment_paths`` entry (a problem with one fails
    the send) and, when images are converted, every local image ``body_md`` references (one
    that cannot be used is left as written, as the reference does). A broadcast inlines
    nothing: its metadata is copied into up to 1,000 inbox entries."""
    if not attachment_paths and "![" not in body_md:
        return Prepared(body_md, [])
    settings = store.settings
    convert = settings.convert_images if convert_images is None else bool(convert_images)
    # The sender proves who it is before anything is read from disk.
    policy = await _sender_policy(store, slug, project_key, sender_name, credentials)
    body_images = convert or policy in ("inline", "file")
    if not attachment_paths and not body_images:
        return Prepared(body_md, [])
    human_key = await projects.human_key(store, slug=slug) or project_key
    job = _Job(
        slug=slug,
        project_dir=Path(human_key),
        policy=policy,
        keep_originals=settings.keep_original_images,
        allow_absolute=settings.allow_absolute_attachment_paths,
        max_bytes=settings.max_attachment_bytes,
        inline_left=0 if broadcast else settings.inline_image_max_bytes,
        staging_root=settings.attachments_staging_path,
        body_room=MAX_ATTACHMENTS - len(attachment_paths),
    )
    return await asyncio.to_thread(_run, job, body_md, attachment_paths, body_images)


async def _sender_policy(store: Store, slug: str, project_key: str, name: str, credentials: tuple[str, str]) -> str:
    refused: Refusal
    try:
        record = await identity_store.get_agent(store, slug=slug, name=name, credentials=credentials)
        return str(record.agent.get("attachments_policy") or "auto")
    except Refusal as exc:
        refused = exc
    await refusals.raise_for(store, refused.reply, slug, project_key, "sender_token")
    raise AssertionError("unreachable")


def _run(job: _Job, body_md: str, attachment_paths: list[str], body_images: bool) -> Prepared:
    if body_images:
        body_md = MARKDOWN_IMAGE.sub(lambda match: _body_image(job, match), body_md)
    for raw in attachment_paths:
        path = _locate(job, raw)
        _attach(job, _read(job, path, raw), path)
    return Prepared(body_md, job.attachments)


# -- paths ------------------------------------------------------------------------------------
def _locate(job: _Job, raw: str) -> Path:
    """The file ``raw`` names: relative to the project's directory and inside it (after
    following symbolic links), or absolute: inside it, or anywhere with
    ALLOW_ABSOLUTE_ATTACHMENT_PATHS."""
    text = raw.strip()
    if not text or "\0" in text:
        raise BrokerError("INVALID_ARGUMENT", f"attachment path {raw!r} is empty or holds a NUL character.")
    expanded = os.path.expanduser(text)
    absolute = os.path.isabs(expanded)
    path = Path(expanded) if absolute else job.project_dir / expanded
    try:
        real, home = path.resolve(), job.project_dir.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop
        raise _unreadable(raw, path, "a symbolic link loops") from None
    if not real.is_relative_to(home) and not (absolute and job.allow_absolute):
        if absolute:
            remedy = (
                f"pass a path inside the project's directory '{job.project_dir}' (relative to it, e.g. "
                "'docs/screenshot.png'), or have the operator set ALLOW_ABSOLUTE_ATTACHMENT_PATHS=true"
            )
        else:
            remedy = (
                "copy the file into the repository and pass its path relative to it (paths may not "
                "leave it through '..' or a symbolic link)"
            )
        raise BrokerError(
            "ATTACHMENT_OUTSIDE_PROJECT",
            f"attachment '{raw}' resolves to '{real}', outside the project's directory '{job.project_dir}'. "
            f"Nothing was sent: {remedy}.",
        )
    if not real.is_file():
        raise BrokerError(
            "ATTACHMENT_NOT_FOUND",
            f"attachment '{raw}' is not a file (looked at '{path}'). Nothing was sent. Relative paths are "
            f"resolved against the project's directory '{job.project_dir}' on the broker's host; check the "
            "path, or put the file in the repository first.",
        )
    return real


def _unreadable(raw: str, path: Path, why: str) -> BrokerError:
    return BrokerError(
        "ATTACHMENT_NOT_FOUND",
        f"attachment '{raw}' cannot be read ({why}; looked at '{path}'). Nothing was sent. Check the path "
        "and that the broker's user may read the file.",
    )


def _read(job: _Job, path: Path, raw: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(job.max_bytes + 1)
    except OSError as exc:
        raise _unreadable(raw, path, exc.strerror or type(exc).__name__) from None
    if len(data) > job.max_bytes:
        raise BrokerError(
            "ATTACHMENT_TOO_LARGE",
            f"attachment '{raw}' is larger than MAX_ATTACHMENT_BYTES ({job.max_bytes} bytes). Nothing was "
            "sent. Attach a smaller file (crop or scale the image, or send the relevant excerpt of a log).",
        )
    return data


# -- body references --------------------------------------------------------------------------
def _body_image(job: _Job, match: re.Match[str]) -> str:
    target = match["target"]
    if target.startswith("data:"):
        media_type = target[5:].split(",", 1)[0].split(";", 1)[0] or "text/plain"
        _remember(job, {"type": "inline", "media_type": media_type})
        return match[0]
    if URL_SCHEME.match(target) or len(job.attachments) >= job.body_room:
        return match[0]
    try:
        path = _locate(job, target)
        data = _read(job, path, target)
    except BrokerError:
        return match[0]  # not a file the send may read: the reference leaves it as written
    image = _open_image(data)
    if image is None:
        return match[0]
    try:
        meta = _store_image(job, data, image, path)
    except BrokerError:
        return match[0]
    if meta["type"] == "inline":
        new_target = f"data:{meta['media_type']};base64,{meta['data_base64']}"
    else:
        new_target = meta["path"]
    return f"![{match['alt']}]({new_target}{match['title'] or ''})"


# -- files ------------------------------------------------------------------------------------
def _remember(job: _Job, meta: dict[str, Any]) -> dict[str, Any]:
    """Add ``meta`` to the message; a file attached twice is listed once."""
    sha1 = meta.get("sha1")
    if sha1:
        if sha1 in job.by_sha1:
            return job.by_sha1[sha1]
        job.by_sha1[sha1] = meta
    job.attachments.append(meta)
    return meta


def _attach(job: _Job, data: bytes, path: Path) -> dict[str, Any]:
    image = _open_image(data)
    if image is not None:
        return _store_image(job, data, image, path)
    sha1 = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    if sha1 in job.by_sha1:
        return job.by_sha1[sha1]
    media_type = mimetypes.guess_type(path.name)[0] or _text_or_binary(data)
    rel = staging.file_rel(job.slug, sha1, _extension(path))
    staging.stage(job.staging_root, rel, data)
    meta = {"type": "file", "media_type": media_type, "bytes": len(data), "path": rel, "sha1": sha1}
    _manifest(job, meta)
    return _remember(job, meta)


def _text_or_binary(data: bytes) -> str:
    """The media type of a file its name says nothing about (a ``.log``): text if it decodes."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain"


def _open_image(data: bytes) -> Image.Image | None:
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if image.width * image.height > MAX_IMAGE_PIXELS:
        return None  # stored as a plain file: never decoded
    return image


def _webp(image: Image.Image) -> bytes:
    alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if alpha else "RGB")
    out = io.BytesIO()
    image.save(out, "WEBP", quality=WEBP_QUALITY)
    return out.getvalue()


def _store_image(job: _Job, data: bytes, image: Image.Image, path: Path) -> dict[str, Any]:
    """An image as WebP: inline while the message's inline allowance lasts (and the sender's
    policy is not ``file``), else a staged file."""
    sha1 = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    if sha1 in job.by_sha1:
        return job.by_sha1[sha1]
    try:
        webp = _webp(image)
    except (OSError, ValueError) as exc:
        raise BrokerError(
            "INVALID_ATTACHMENT",
            f"image '{path.name}' could not be converted to WebP ({exc}). Nothing was sent. Save it as PNG "
            "or JPEG and attach it again.",
        ) from None
    size = {"width": image.width, "height": image.height}
    if job.policy != "file" and len(webp) <= job.inline_left:
        job.inline_left -= len(webp)
        encoded = base64.b64encode(webp).decode("ascii")
        meta = {"type": "inline", "media_type": "image/webp", "bytes": len(webp), **size, "sha1": sha1,
                "data_base64": encoded}  # fmt: skip
        return _remember(job, meta)
    rel = staging.file_rel(job.slug, sha1, "webp")
    staging.stage(job.staging_root, rel, webp)
    meta = {"type": "file", "media_type": "image/webp", "bytes": len(webp), "path": rel, **size, "sha1": sha1}
    if job.keep_originals:
        meta["original_path"] = staging.original_rel(job.slug, sha1, _extension(path, image))
        staging.stage(job.staging_root, meta["original_path"], data)
    _manifest(job, meta, original_bytes=len(data))
    return _remember(job, meta)


def _extension(path: Path, image: Image.Image | None = None) -> str:
    ext = (image.format or "").lower() if image is not None else ""
    ext = ext or path.suffix.lstrip(".").lower()
    return ext if SAFE_EXT.match(ext) else "bin"


def _manifest(job: _Job, meta: dict[str, Any], original_bytes: int | None = None) -> None:
    """``_manifests/<sha1>.json``: what the stored file is (a function of the content alone, so
    the same for every message that carries it)."""
    manifest = {key: value for key, value in meta.items() if key != "type"}
    if original_bytes is not None:
        manifest["original_bytes"] = original_bytes
    text = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    staging.stage(job.staging_root, staging.manifest_rel(job.slug, meta["sha1"]), text)
