"""What the writer writes to: a store that takes rows as the writer buffered them.

Interactions are buffered as their sources (`rows.interaction_source`). A store process
(pipeline/store/process.py) builds their rows itself, off the worker's interpreter; any other
backend gets them built on the writer's thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pipeline.store.backends import Backend, QueryResult
from pipeline.store.rows import TABLES, Row, built


@runtime_checkable
class RowStore(Protocol):
    """What the writer writes to: the rows it buffered (sources, for BUILDERS' tables)."""

    def write(self, table: str, rows: Sequence[Row]) -> None: ...
    def select(self, sql: str, readonly: bool = True) -> QueryResult: ...


class BuildingHere:
    """A backend of this process as a RowStore: rows are built on the writer's thread."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def write(self, table: str, rows: Sequence[Row]) -> None:
        self.backend.insert(table, TABLES[table], built(table, rows))

    def select(self, sql: str, readonly: bool = True) -> QueryResult:
        return self.backend.select(sql, readonly)


def row_store(store: Backend | RowStore) -> RowStore:
    """The store itself if it builds rows (a store process), else the backend building them here."""
    return store if isinstance(store, RowStore) else BuildingHere(store)
