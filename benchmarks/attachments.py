"""Attachments benchmark: what a 1 MB image adds to a send.

Times send_message with ``attachment_paths=[<1 MB PNG>]`` (read, decoded and encoded as WebP in
the broker process, staged on disk; a file, being far above INLINE_IMAGE_MAX_BYTES) against
the same send without it, interleaved in one run. Every send of the image converts it again:
the cost measured is the conversion, not the staging, which is written once.

Run: python -m benchmarks.attachments [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import tempfile
from pathlib import Path

from fastmcp import Client
from PIL import Image

from benchmarks.common import bench_settings, interleaved, percentile, redis_url
from broker.server import build_server

IMAGE_BYTES = 1_000_000


def one_megabyte_png() -> bytes:
    """A noisy PNG of about 1 MB (noise does not compress, so the size is what it says)."""
    side = int((IMAGE_BYTES / 3) ** 0.5)
    rng = random.Random(7)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def run(rounds: int) -> None:
    with redis_url() as (url, source), tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "repo"
        project.mkdir()
        image = one_megabyte_png()
        (project / "screenshot.png").write_bytes(image)
        server = build_server(bench_settings(url, Path(tmp) / "storage"))
        async with Client(server) as client:
            await client.call_tool("ensure_project", {"human_key": str(project)})
            names = []
            for _ in range(2):
                reg = await client.call_tool(
                    "register_agent", {"project_key": str(project), "program": "bench", "model": "m"}
                )
                names.append(reg.data["name"])
            plain = {"project_key": str(project), "sender_name": names[0], "to": [names[1]],
                     "subject": "benchmark subject", "body_md": "x" * 512}  # fmt: skip
            attached = {**plain, "attachment_paths": ["screenshot.png"]}
            first = await client.call_tool("send_message", attached)
            meta = first.data["attachments"][0]
            for _ in range(20):  # warm up
                await client.call_tool("send_message", plain)
            samples = await interleaved(
                {"attached": lambda: client.call_tool("send_message", attached),
                 "plain": lambda: client.call_tool("send_message", plain)}, rounds)  # fmt: skip

    with_image, without = percentile(samples["attached"], 50) * 1e3, percentile(samples["plain"], 50) * 1e3
    print(f"Redis: {source}; {rounds} sends of each, interleaved")
    print(f"image: {len(image)} B PNG -> {meta['bytes']} B WebP {meta['width']}x{meta['height']} ({meta['type']})")
    print(
        f"send_message with the image   p50 {with_image:8.2f} ms  p95 {percentile(samples['attached'], 95) * 1e3:8.2f} ms"
    )
    print(f"send_message without it       p50 {without:8.2f} ms  p95 {percentile(samples['plain'], 95) * 1e3:8.2f} ms")
    print(f"ratio {with_image / without:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="sends of each kind")
    args = parser.parse_args()
    asyncio.run(run(args.rounds))


if __name__ == "__main__":
    main()
