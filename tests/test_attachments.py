"""Attachments (§5.3): attachment_paths and local images in body_md become WebP, inline as data
URIs within INLINE_IMAGE_MAX_BYTES or content-addressed files committed to the archive; paths
stay inside the project's directory (docs/attachments.md)."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import random
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from helpers import Tools, drop_prefix, make_repo, make_settings
from persist_helpers import committed_files, git, run_worker
from PIL import Image

from broker.config import Settings
from broker.persistence import archive
from broker.server import build_server

WEBP_FILE = re.compile(r"^projects/[^/]+/attachments/([0-9a-f]{2})/([0-9a-f]{40})\.webp$")


@functools.cache  # the same bytes every call; a noisy 400x300 takes a third of a second to draw
def png(width: int, height: int, noisy: bool = False) -> bytes:
    """A PNG; a noisy one compresses badly (its WebP is large)."""
    image = Image.new("RGB", (width, height), (30, 120, 200))
    if noisy:
        rng = random.Random(width * 7919 + height)
        image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(width * height)])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def archived_bytes(settings: Settings, rel: str) -> bytes:
    return subprocess.run(
        ["git", "--git-dir", str(settings.archive_path), "show", f"HEAD:{rel}"], check=True, capture_output=True
    ).stdout


def commits_touching(settings: Settings, rel: str) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(settings.archive_path), "log", "--format=%H", "main", "--", rel],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return out.split()


Mail = tuple[Tools, Settings, FastMCP, Path]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A Git repository with a screenshot, a small icon and a log, and a file outside it."""
    root = make_repo(tmp_path / "work" / "repo")
    (root / "shots").mkdir()
    (root / "shots" / "screen.png").write_bytes(png(400, 300, noisy=True))
    (root / "shots" / "icon.png").write_bytes(png(16, 16))
    (root / "build.log").write_text("step 1 ok\nstep 2 FAILED: exit 2\n")
    (tmp_path / "work" / "secret.png").write_bytes(png(8, 8))
    return root


@pytest.fixture
async def open_mail(backend: str, tmp_path: Path, repo: Path) -> AsyncIterator[Callable[..., Awaitable[Mail]]]:
    """Start a server with these settings, a project at ``repo`` and agents BlueLake (policy
    ``auto``), GreenCastle and RedFox (policy ``file``)."""
    started: list[tuple[FastMCP, Client]] = []

    async def start(**overrides: Any) -> Mail:
        settings = make_settings(backend, tmp_path / "storage", **overrides)
        server = build_server(settings)
        client = Client(server)
        await client.__aenter__()
        started.append((server, client))
        tools = Tools(client)
        await tools.project(str(repo))
        await tools.agent("BlueLake", project_key=str(repo))
        await tools.agent("GreenCastle", project_key=str(repo))
        await tools.agent("RedFox", project_key=str(repo), attachments_policy="file")
        return tools, settings, server, repo

    yield start
    for server, client in started:
        await client.__aexit__(None, None, None)
        await drop_prefix(server.store)  # type: ignore[attr-defined]


@pytest.fixture
async def mail(open_mail: Callable[..., Awaitable[Mail]]) -> Mail:
    return await open_mail()


async def send(tools: Tools, repo: Path, sender: str = "BlueLake", **extra: Any) -> dict[str, Any]:
    args = {"subject": "Look", "body_md": "See attached.", **extra}
    return await tools.call("send_message", project_key=str(repo), sender_name=sender, to=["GreenCastle"], **args)


async def refused(tools: Tools, repo: Path, **extra: Any) -> str:
    args = {"subject": "Look", "body_md": "See attached.", **extra}
    return await tools.error("send_message", project_key=str(repo), sender_name="BlueLake", to=["GreenCastle"], **args)


# -- files --------------------------------------------------------------------------------------
async def test_png_becomes_a_webp_file_committed_to_the_archive(mail: Mail) -> None:
    tools, settings, server, repo = mail
    original = (repo / "shots" / "screen.png").read_bytes()
    result = await send(tools, repo, sender="RedFox", attachment_paths=["shots/screen.png"])

    [meta] = result["attachments"]
    assert result["deliveries"][0]["payload"]["attachments"] == [meta]
    assert set(meta) == {"type", "media_type", "bytes", "path", "width", "height", "sha1"}
    assert (meta["type"], meta["media_type"], meta["width"], meta["height"]) == ("file", "image/webp", 400, 300)
    assert meta["sha1"] == hashlib.sha1(original).hexdigest()
    match = WEBP_FILE.match(meta["path"])
    assert match and match[1] == meta["sha1"][:2] and match[2] == meta["sha1"]
    [received] = await tools.inbox("GreenCastle", project_key=str(repo))
    assert received["attachments"] == [meta]

    await run_worker(server, settings)
    stored = archived_bytes(settings, meta["path"])
    assert len(stored) == meta["bytes"]
    decoded = Image.open(io.BytesIO(stored))
    assert (decoded.format, decoded.size) == ("WEBP", (400, 300))
    assert f"{meta['path'].split('/attachments/')[0]}/attachments/_manifests/{meta['sha1']}.json" in committed_files(
        settings
    )
    # committed, so no longer staged
    assert not (settings.attachments_staging_path / meta["path"]).exists()


async def test_the_same_image_is_stored_once(mail: Mail) -> None:
    tools, settings, server, repo = mail
    first = await send(tools, repo, sender="RedFox", attachment_paths=["shots/screen.png"])
    second = await send(tools, repo, sender="RedFox", attachment_paths=["shots/screen.png"])
    await run_worker(server, settings)
    third = await send(tools, repo, sender="RedFox", attachment_paths=["./shots/../shots/screen.png"])
    await run_worker(server, settings)

    paths = {r["attachments"][0]["path"] for r in (first, second, third)}
    assert len(paths) == 1
    [path] = paths
    assert [f for f in committed_files(settings) if WEBP_FILE.match(f)] == [path]
    assert len(commits_touching(settings, path)) == 1  # written once, never rewritten


async def test_a_batch_of_large_files_is_committed_in_parts(mail: Mail, monkeypatch: pytest.MonkeyPatch) -> None:
    tools, settings, server, repo = mail
    monkeypatch.setattr(archive, "ATTACHMENT_COMMIT_BYTES", 1)  # every file over the bound
    (repo / "other.png").write_bytes(png(120, 90, noisy=True))
    first = await send(tools, repo, sender="RedFox", attachment_paths=["shots/screen.png", "build.log"])
    second = await send(tools, repo, sender="RedFox", attachment_paths=["other.png"])
    await run_worker(server, settings)
    files = committed_files(settings)
    for meta in first["attachments"] + second["attachments"]:
        assert meta["path"] in files
        assert not (settings.attachments_staging_path / meta["path"]).exists()
    subjects = git(settings, "log", "--format=%s", "main").splitlines()
    assert sum(1 for s in subjects if s.startswith("attachments: ")) >= 2


async def test_a_large_image_is_a_file_even_under_policy_auto(mail: Mail) -> None:
    tools, settings, _, repo = mail
    result = await send(tools, repo, attachment_paths=["shots/screen.png"])
    [meta] = result["attachments"]
    assert meta["bytes"] > settings.inline_image_max_bytes
    assert meta["type"] == "file"


async def test_a_small_image_is_inline_as_a_data_uri(mail: Mail) -> None:
    tools, settings, server, repo = mail
    result = await send(tools, repo, attachment_paths=["shots/icon.png"])
    [meta] = result["attachments"]
    assert set(meta) == {"type", "media_type", "bytes", "width", "height", "sha1", "data_base64"}
    assert (meta["type"], meta["media_type"], meta["width"], meta["height"]) == ("inline", "image/webp", 16, 16)
    data = base64.b64decode(meta["data_base64"])
    assert len(data) == meta["bytes"] <= settings.inline_image_max_bytes
    assert Image.open(io.BytesIO(data)).format == "WEBP"
    await run_worker(server, settings)
    assert not [f for f in committed_files(settings) if "/attachments/" in f]


async def test_a_broadcast_inlines_nothing(mail: Mail) -> None:
    tools, _, _, repo = mail
    result = await tools.call(
        "send_message", project_key=str(repo), sender_name="BlueLake", to=[], broadcast=True, subject="All",
        body_md="Icon: ![i](shots/icon.png)",
    )  # fmt: skip
    [meta] = result["deliveries"][0]["payload"]["attachments"]
    assert meta["type"] == "file" and meta["width"] == 16


async def test_inline_images_of_one_message_share_the_size_limit(open_mail: Callable[..., Awaitable[Mail]]) -> None:
    dots = [png(12, 12 + index, noisy=True) for index in range(3)]
    sizes = []
    for dot in dots:
        out = io.BytesIO()
        Image.open(io.BytesIO(dot)).save(out, "WEBP", quality=80)
        sizes.append(len(out.getvalue()))
    limit = sizes[0] + min(sizes[1:]) - 1  # room for the first image and not for a second
    tools, _, _, repo = await open_mail(INLINE_IMAGE_MAX_BYTES=limit)
    for index, dot in enumerate(dots):
        (repo / f"dot{index}.png").write_bytes(dot)
    result = await send(tools, repo, attachment_paths=["dot0.png", "dot1.png", "dot2.png"])
    assert [meta["type"] for meta in result["attachments"]] == ["inline", "file", "file"]
    assert [meta["bytes"] for meta in result["attachments"]] == sizes


async def test_a_log_is_attached_verbatim(mail: Mail) -> None:
    tools, settings, server, repo = mail
    result = await send(tools, repo, attachment_paths=["build.log"])
    [meta] = result["attachments"]
    assert (meta["type"], meta["media_type"]) == ("file", "text/plain")
    assert meta["path"].endswith(".log")
    await run_worker(server, settings)
    assert archived_bytes(settings, meta["path"]) == (repo / "build.log").read_bytes()


async def test_a_cross_project_send_archives_the_file_once(mail: Mail, tmp_path: Path) -> None:
    tools, settings, server, repo = mail
    other = make_repo(tmp_path / "work" / "other")
    await tools.project(str(other))
    await tools.agent("OrangeOwl", project_key=str(other))
    await tools.call("set_contact_policy", project_key=str(other), agent_name="OrangeOwl", policy="open")
    result = await tools.call(
        "send_message", project_key=str(repo), sender_name="RedFox", subject="Look", body_md="See attached.",
        to=["GreenCastle", f"OrangeOwl@{other}"], attachment_paths=["shots/screen.png"],
    )  # fmt: skip
    metas = [d["payload"]["attachments"] for d in result["deliveries"]]
    assert len(metas) == 2 and metas[0] == metas[1]
    [meta] = metas[0]
    [received] = await tools.inbox("OrangeOwl", project_key=str(other))
    assert received["attachments"] == [meta]
    await run_worker(server, settings)
    assert Image.open(io.BytesIO(archived_bytes(settings, meta["path"]))).size == (400, 300)
    assert len(commits_touching(settings, meta["path"])) == 1


async def test_hard_delete_project_removes_staged_files(mail: Mail) -> None:
    tools, settings, _, repo = mail
    result = await send(tools, repo, sender="RedFox", attachment_paths=["shots/screen.png"])
    staged = settings.attachments_staging_path / result["attachments"][0]["path"]
    assert staged.is_file() and staged.stat().st_mode & 0o077 == 0  # owner-only, like the archive
    token = (await tools.agent("BlueLake", project_key=str(repo)))["registration_token"]
    await tools.call("hard_delete_project", project_key=str(repo), confirmation="I UNDERSTAND",
                     registration_token=token)  # fmt: skip
    assert not staged.exists()


# -- body_md -----------------------------------------------------------------------------------
async def test_a_markdown_image_in_the_body_is_converted(mail: Mail) -> None:
    tools, settings, server, repo = mail
    body = 'Before ![the icon](shots/icon.png "Icon") and ![remote](https://example.com/x.png) after.'
    result = await send(tools, repo, body_md=body)
    payload = result["deliveries"][0]["payload"]
    [meta] = result["attachments"]
    assert meta["type"] == "inline"
    uri = f"data:image/webp;base64,{meta['data_base64']}"
    assert payload["body_md"] == f'Before ![the icon]({uri} "Icon") and ![remote](https://example.com/x.png) after.'

    filed = await send(tools, repo, sender="RedFox", body_md="Screen: ![s](shots/screen.png)")
    [meta] = filed["attachments"]
    assert filed["deliveries"][0]["payload"]["body_md"] == f"Screen: ![s]({meta['path']})"
    [message] = [m for m in await tools.inbox("GreenCastle", project_key=str(repo), include_bodies=True)
                 if m["from"] == "RedFox"]  # fmt: skip
    assert message["body_md"] == f"Screen: ![s]({meta['path']})"
    await run_worker(server, settings)
    assert meta["path"] in committed_files(settings)


async def test_convert_images_false_leaves_the_body_alone(mail: Mail) -> None:
    tools, _, _, repo = mail
    body = "![the icon](shots/icon.png)"
    result = await send(tools, repo, body_md=body, convert_images=False)
    assert result["deliveries"][0]["payload"]["body_md"] == body and result["attachments"] == []


async def test_a_body_image_outside_the_project_is_left_as_written(mail: Mail) -> None:
    tools, _, _, repo = mail
    body = "![x](../secret.png) ![y](missing.png)"
    result = await send(tools, repo, body_md=body)
    assert result["deliveries"][0]["payload"]["body_md"] == body and result["attachments"] == []


async def test_a_data_uri_is_kept_with_its_media_type(mail: Mail) -> None:
    tools, _, _, repo = mail
    uri = "data:image/png;base64," + base64.b64encode(png(2, 2)).decode()
    body = f"Inline already: ![dot]({uri})"
    result = await send(tools, repo, body_md=body)
    assert result["deliveries"][0]["payload"]["body_md"] == body
    assert result["attachments"] == [{"type": "inline", "media_type": "image/png"}]


async def test_a_reply_converts_images_in_its_body(mail: Mail) -> None:
    tools, _, _, repo = mail
    first = await send(tools, repo)
    reply = await tools.call(
        "reply_message",
        project_key=str(repo),
        message_id=first["deliveries"][0]["payload"]["id"],
        sender_name="GreenCastle",
        body_md="Here: ![icon](shots/icon.png)",
    )
    [meta] = reply["attachments"]
    assert meta["type"] == "inline" and reply["body_md"].startswith("Here: ![icon](data:image/webp;base64,")


# -- refusals ----------------------------------------------------------------------------------
async def test_paths_out_of_the_project_are_refused(mail: Mail) -> None:
    tools, _, _, repo = mail
    os.symlink(repo.parent / "secret.png", repo / "link.png")
    for path in ("../secret.png", "shots/../../secret.png", "link.png"):
        text = await refused(tools, repo, attachment_paths=[path])
        assert "ATTACHMENT_OUTSIDE_PROJECT" in text and "Nothing was sent" in text
        assert "relative to it" in text  # the remedy
    assert await tools.inbox("GreenCastle", project_key=str(repo)) == []


async def test_absolute_paths_outside_the_project_need_the_setting(
    open_mail: Callable[..., Awaitable[Mail]], tmp_path: Path
) -> None:
    tools, _, _, repo = await open_mail()
    outside = str(repo.parent / "secret.png")
    text = await refused(tools, repo, attachment_paths=[outside])
    assert "ATTACHMENT_OUTSIDE_PROJECT" in text and "ALLOW_ABSOLUTE_ATTACHMENT_PATHS=true" in text
    inside = await send(tools, repo, attachment_paths=[str(repo / "shots" / "icon.png")])
    assert inside["attachments"][0]["width"] == 16

    tools, _, _, repo = await open_mail(ALLOW_ABSOLUTE_ATTACHMENT_PATHS=True)
    allowed = await send(tools, repo, attachment_paths=[outside])
    assert allowed["attachments"][0]["width"] == 8
    text = await refused(tools, repo, attachment_paths=["../secret.png"])  # relative: still inside only
    assert "ATTACHMENT_OUTSIDE_PROJECT" in text


async def test_a_missing_file_is_refused(mail: Mail) -> None:
    tools, _, _, repo = mail
    text = await refused(tools, repo, attachment_paths=["shots/nope.png"])
    assert "ATTACHMENT_NOT_FOUND" in text and str(repo) in text
    text = await refused(tools, repo, attachment_paths=["shots"])  # a directory
    assert "ATTACHMENT_NOT_FOUND" in text
    os.symlink("loop.png", repo / "loop.png")
    text = await refused(tools, repo, attachment_paths=["loop.png"])
    assert "ATTACHMENT_NOT_FOUND" in text
    assert await tools.inbox("GreenCastle", project_key=str(repo)) == []


async def test_a_file_over_the_size_limit_is_refused(open_mail: Callable[..., Awaitable[Mail]]) -> None:
    tools, _, _, repo = await open_mail(MAX_ATTACHMENT_BYTES=100)
    text = await refused(tools, repo, attachment_paths=["shots/screen.png"])
    assert "ATTACHMENT_TOO_LARGE" in text and "MAX_ATTACHMENT_BYTES" in text
