"""The index (SQLite by default, PostgreSQL with DATABASE_URL): see ``core`` for the API and the
choice of SQLAlchemy Core + psycopg 3, ``migrations`` for the schema versions, ``writes`` for what
the persistence worker upserts."""

from broker.persistence.index.core import Index, indexed_project_id, shared_index
from broker.persistence.index.recipient_order import recipient_order
from broker.persistence.index.rows import TRANSIENT_ERRORS, Connection, Result, Row
from broker.persistence.index.target import BUSY_TIMEOUT_MS
from broker.persistence.index.writes import AGENT_REFERENCES, PROJECT_REFERENCES, Batch

__all__ = [
    "AGENT_REFERENCES",
    "BUSY_TIMEOUT_MS",
    "PROJECT_REFERENCES",
    "TRANSIENT_ERRORS",
    "Batch",
    "Connection",
    "Index",
    "Result",
    "Row",
    "indexed_project_id",
    "recipient_order",
    "shared_index",
]
