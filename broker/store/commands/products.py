"""Products (the product bus) in Redis: the typed command of ensure_product.lua and the plain
per-key steps of links (one HSET / HDEL each, never a script over a product key and a project
key together, so a Redis Cluster may keep them on different nodes).

A link is the pair (slug, project id) in the product's links hash. It counts only while the
project with that slug still has that id (ids are never reused), so a link left behind by a
``hard_delete_project`` that stopped half-way never points at a project created later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.store.commands.projects import ProjectRecord
from broker.store.refusals import accepted
from broker.store.store import Store


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    product_uid: str
    name: str
    created_at: str

    @classmethod
    def from_json(cls, text: str) -> Product:
        value: Mapping[str, Any] = json.loads(text)
        return cls(int(value["id"]), value["product_uid"], value["name"], value["created_at"])


async def ensure(store: Store, *, key: str, new_uid: str, new_name: str, max_products: int) -> tuple[Product, bool]:
    """(the product ``key`` names, whether this call created it). Refusal("NAME_TAKEN", product
    JSON) when a new product's name belongs to another; Refusal("TOO_MANY", count) past the cap."""
    keys = store.keys
    reply = await store.run(
        "ensure_product",
        [keys.products, keys.product_names, keys.product_seq],
        [key, new_uid, new_name, max_products],
    )
    accepted(reply)
    return Product.from_json(reply[1]), bool(int(reply[2]))


async def find(store: Store, *, key: str) -> Product | None:
    """The product whose product_uid, else whose name, is ``key`` (two reads at most)."""
    client = store.client()
    found = await client.hget(store.keys.products, key)
    if found is None:
        uid = await client.hget(store.keys.product_names, key)
        found = await client.hget(store.keys.products, uid) if uid else None
    return None if found is None else Product.from_json(found)


async def all_products(store: Store) -> list[Product]:
    """Every product, by id (for ``broker export-agent-mail``)."""
    found = await store.client().hvals(store.keys.products)
    return sorted((Product.from_json(text) for text in found), key=lambda product: product.id)


async def link(store: Store, *, product_uid: str, slug: str, project_id: int) -> None:
    await store.client().hset(store.keys.product_links(product_uid), slug, project_id)


async def link_count(store: Store, *, product_uid: str) -> int:
    return int(await store.client().hlen(store.keys.product_links(product_uid)))


_PROJECT_FIELDS = ("id", "slug", "human_key", "created_at", "archived_at")


async def linked_projects(store: Store, *, product_uid: str) -> list[ProjectRecord]:
    """The projects linked to the product that still exist with the id they were linked with,
    in creation order (by project id)."""
    client = store.client()
    links = await client.hgetall(store.keys.product_links(product_uid))
    if not links:
        return []
    slugs = sorted(links)
    pipe = client.pipeline(transaction=False)
    for slug in slugs:
        pipe.hmget(store.keys.project(slug), *_PROJECT_FIELDS)
    found = await pipe.execute()
    records = [
        ProjectRecord.from_hash(dict(zip(_PROJECT_FIELDS, values, strict=True)))
        for slug, values in zip(slugs, found, strict=True)
        if values[0] is not None and values[0] == links[slug]
    ]
    return sorted(records, key=lambda record: record.id)


async def unlink_project(store: Store, *, slug: str) -> int:
    """Remove the project from every product's links (hard_delete_project); how many it was in."""
    client = store.client()
    uids = await client.hkeys(store.keys.products)
    if not uids:
        return 0
    pipe = client.pipeline(transaction=False)
    for uid in uids:
        pipe.hdel(store.keys.product_links(uid), slug)
    return sum(int(n) for n in await pipe.execute())
