"""Products: named groups of projects (several repositories of one product) that the product
bus tools search and read across. Global, not per project; kept in Redis only, under the
hash tag {#products} (broker/store/commands/products.py, docs/build-slots-and-products.md).

Linking a project grants nothing: the cross-project reads (broker/history/products.py) show
each linked project's mail only to an agent authenticated in that project.
"""

from __future__ import annotations

import re
from typing import Any
from uuid import uuid4

from broker.errors import BrokerError
from broker.identity import refusals
from broker.identity.projects import check_project_key, project_slug
from broker.store.commands import products as product_store
from broker.store.commands import projects as project_store
from broker.store.commands.products import Product
from broker.store.commands.projects import ProjectRecord
from broker.store.refusals import Refusal
from broker.store.store import Store

MAX_KEY_CHARS = 255  # the reference's column widths
MAX_PRODUCTS = 10_000
MAX_PROJECTS_PER_PRODUCT = 100  # a product read visits each linked project: bound that work
UID_SHAPE = re.compile(r"^[A-Fa-f0-9]{8,64}$")


def check_product_key(value: object, field: str = "product_key") -> str:
    if not isinstance(value, str) or not value.strip():
        raise BrokerError("INVALID_ARGUMENT", f"{field} is empty. Pass a product's product_uid or name.")
    key = value.strip()
    if len(key) > MAX_KEY_CHARS or "\0" in key:
        raise BrokerError("INVALID_ARGUMENT", f"{field} must be at most {MAX_KEY_CHARS} characters, without NUL.")
    return key


def product_dict(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "product_uid": product.product_uid,
        "name": product.name,
        "created_at": product.created_at,
    }


async def ensure_product(store: Store, product_key: str | None, name: str | None) -> dict[str, Any]:
    """The product whose product_uid or name is ``product_key`` (else ``name``), created if none
    is: its uid is the key lowercased when the key is 8-64 hex digits, else a random one."""
    if not (isinstance(product_key, str) and product_key.strip()) and not (isinstance(name, str) and name.strip()):
        raise BrokerError("INVALID_ARGUMENT", "Pass product_key or name (or both) to ensure_product.")
    key = check_product_key(product_key if isinstance(product_key, str) and product_key.strip() else name)
    new_name = check_product_key(name, "name") if isinstance(name, str) and name.strip() else key
    new_uid = key.lower() if UID_SHAPE.match(key) else uuid4().hex[:20]
    try:
        product, _ = await product_store.ensure(
            store, key=key, new_uid=new_uid, new_name=new_name, max_products=MAX_PRODUCTS
        )
    except Refusal as refusal:
        if refusal.code == "NAME_TAKEN":
            other = Product.from_json(refusal.details[0])
            raise BrokerError(
                "PRODUCT_NAME_TAKEN",
                f"A product named '{new_name}' already exists (product_uid '{other.product_uid}'). "
                f"Use ensure_product(product_key='{other.product_uid}') for it, or choose another name.",
            ) from None
        raise BrokerError(
            "TOO_MANY_PRODUCTS",
            f"The broker holds {refusal.details[0]} products, its limit ({MAX_PRODUCTS}). Reuse an existing product.",
        ) from None
    return product_dict(product)


async def product_of(store: Store, product_key: object) -> Product:
    key = check_product_key(product_key)
    product = await product_store.find(store, key=key)
    if product is None:
        raise BrokerError(
            "NOT_FOUND",
            f"Product '{key}' not found. Create it with ensure_product(product_key='{key}'), "
            "then link projects with products_link.",
        )
    return product


async def products_link(store: Store, product_key: str, project_key: str) -> dict[str, Any]:
    check_product_key(product_key)
    check_project_key(project_key)
    product = await product_of(store, product_key)
    slug = await project_slug(store, project_key)
    project = await project_store.project_record(store, slug=slug)
    if project is None:
        raise await refusals.project_not_found(store, project_key)
    linked = await product_store.linked_projects(store, product_uid=product.product_uid)
    if project.id not in {p.id for p in linked} and len(linked) >= MAX_PROJECTS_PER_PRODUCT:
        raise BrokerError(
            "TOO_MANY_PROJECTS",
            f"Product '{product.name}' already links {len(linked)} projects, the limit "
            f"({MAX_PROJECTS_PER_PRODUCT}). Use another product for more.",
        )
    await product_store.link(store, product_uid=product.product_uid, slug=slug, project_id=project.id)
    return {
        "product": {"id": product.id, "product_uid": product.product_uid, "name": product.name},
        "project": {"id": project.id, "slug": project.slug, "human_key": project.human_key},
        "linked": True,
    }


async def linked_projects(store: Store, product: Product) -> list[ProjectRecord]:
    return await product_store.linked_projects(store, product_uid=product.product_uid)


async def product_view(store: Store, product_key: str) -> dict[str, Any]:
    """resource://product/{key}: the product and its linked projects."""
    product = await product_of(store, product_key)
    projects = await linked_projects(store, product)
    return {
        **product_dict(product),
        "projects": [
            {"id": p.id, "slug": p.slug, "human_key": p.human_key, "created_at": p.created_at} for p in projects
        ],
    }
