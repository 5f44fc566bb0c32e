"""The persistence write path's guards against a Redis that lost its last writes
(docs/durability-ids.md): a batch never writes a second record under an id the index holds
for another one, and the id counters are raised past the index's ids when they went back."""

from __future__ import annotations

import logging

from broker.persistence.entries import Work
from broker.persistence.index import Index
from broker.store.commands.drain import SyncClient
from broker.store.ids import largest_indexed_ids, raise_past_index
from broker.store.keys import Keys
from broker.store.times import micros

log = logging.getLogger(__name__)


def drop_clashes(index: Index, slug: str, work: Work) -> None:
    """Leave out of the batch every message and reservation whose id the index already holds
    for another record (an id handed out again after Redis lost its last writes, by a broker
    without broker/store/ids.py's floor): the indexed record stays, no second canonical file is
    written, and the rest of the batch persists instead of the project stalling. A message is
    told apart by its creation time, a reservation by that and its pattern; a replay of the
    same record is not a clash (its rows and files are written again, unchanged)."""
    indexed = index.indexed_values("messages", list(work.created_us), ("created_ts",))
    clashes = {mid for mid, (created_ts,) in indexed.items() if micros(created_ts) != work.created_us[mid]}
    reservations = {r["id"]: (r["created_ts"], r["path_pattern"]) for r in work.batch.reservations}
    held = index.indexed_values("file_reservations", list(reservations), ("created_ts", "path_pattern"))
    taken = {rid for rid, values in held.items() if values != reservations[rid]}
    if not clashes and not taken:
        return
    log.error(
        "project %s: ids already indexed for other records, left as indexed: messages %s, reservations %s",
        slug, sorted(clashes), sorted(taken),
    )  # fmt: skip
    batch = work.batch
    batch.messages = [m for m in batch.messages if m["id"] not in clashes]
    batch.recipients = [r for r in batch.recipients if r["message_id"] not in clashes]
    work.messages = [m for m in work.messages if m[2].id not in clashes]
    batch.reservations = [r for r in batch.reservations if r["id"] not in taken]
    work.reservations = [r for r in work.reservations if r[1]["id"] not in taken]


def guard_counters(client: SyncClient, keys: Keys, index: Index, counters: dict[str, int]) -> None:
    """Raise the id counters past the index's largest ids when one is below (Redis lost its
    last writes, or was replaced by a replica or an empty server): the second guard behind
    allocate_ids.lua's clock floor, for a Redis whose clock is behind. ``counters`` were read
    with the batch, before it was written; every id in it was handed out before that read, so
    a counter below an indexed id has gone back, or another worker indexed newer ids since
    (raise_past_index reads the counters again and raises only those still below)."""
    largest = largest_indexed_ids(index)
    if all(counters.get(kind, 0) >= top for kind, top in largest.items()):
        return
    raised = raise_past_index(client, keys, index)
    if raised:
        log.warning("id counters were behind the index (Redis lost writes); raised: %s", raised)
