"""Group commit: the hot-path inserts of many request threads share one statement and commit.

Slack expects an answer within 3 seconds, and the bot answers a request only once it is
stored (its signature in the replay ledger and, for a channel message, the message in the
timeline, in the same transaction), so a busy
channel means many tiny concurrent write transactions. On SQLite they queue on the single
write lock and its busy-wait back-off; on PostgreSQL each pays a round trip and a commit.
Here one caller at a time takes every insert waiting, writes each table's rows with one
`INSERT … ON CONFLICT DO NOTHING RETURNING` and commits once. Each caller returns only
after its own row is committed, learning whether it was new, exactly as if it had inserted
alone: a row whose key is already stored, or came earlier in the same batch, is not new.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from incidentbot.sqlite_writers import ACK_PATH

log = logging.getLogger(__name__)

MAX_BATCH = 256


@dataclass(frozen=True)
class Row:
    """One row to insert into `table` unless a row with the same `unique` columns exists."""

    table: Table
    values: Mapping[str, Any]
    unique: tuple[str, ...]

    @property
    def key(self) -> tuple[str, tuple[Any, ...]]:
        return self.table.name, tuple(self.values[column] for column in self.unique)


@dataclass(frozen=True)
class _Insert:
    row: Row
    then: Row | None
    done: Future[bool] = field(default_factory=Future)


def insert_new(connection: Connection, rows: Sequence[Row]) -> list[bool]:
    """Insert the rows whose key is not stored yet; for each row, whether it was inserted.

    One cached `INSERT … ON CONFLICT (unique) DO NOTHING RETURNING unique` per table, run by
    SQLAlchemy's "insertmanyvalues" as multi-row statements. Of rows with equal keys in
    `rows`, the first is the one inserted.
    """
    groups: dict[tuple[Table, tuple[str, ...]], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.table, row.unique), []).append(row)
    inserted: set[tuple[str, tuple[Any, ...]]] = set()
    for (table, unique), members in groups.items():
        statement = _insert_statement(connection.dialect.name, table, unique)
        found = connection.execute(statement, [row.values for row in members])
        inserted.update((table.name, tuple(key)) for key in found)
    results = []
    for row in rows:
        results.append(row.key in inserted)
        inserted.discard(row.key)
    return results


@functools.lru_cache(maxsize=64)
def _insert_statement(dialect: str, table: Table, unique: tuple[str, ...]) -> Any:
    """The statement is built once per table, so SQLAlchemy compiles it once."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=list(unique)) \
        .returning(*(table.c[column] for column in unique))


class GroupCommit:
    """Batches concurrent inserts by leader election (see the module docstring).

    Each caller queues its row and takes the lock; whoever holds it writes and commits
    every row queued so far, its own and others'. A caller whose row a previous holder
    committed just returns. Without contention that is one plain insert in the caller's own
    thread; under load the batch grows with the number of callers waiting.
    """

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine.execution_options(**{ACK_PATH: True})
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Insert] = queue.SimpleQueue()
        self._lock = threading.Lock()

    def insert(self, row: Row, then: Row | None = None) -> bool:
        """Insert `row` unless a row with its key exists; True if inserted. If it was, and
        `then` is given, `then` is inserted in the same transaction (unless its key exists).

        Returns once committed. Raises the database error that stopped the commit.
        """
        item = _Insert(row, then)
        self._queue.put(item)
        while not item.done.done():
            with self._lock:
                if not item.done.done():
                    self._commit(self._take())
        return item.done.result()

    def _take(self) -> list[_Insert]:
        """Every queued insert, up to the batch limit."""
        batch: list[_Insert] = []
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[_Insert]) -> None:
        try:
            with self._engine.begin() as connection:
                results = self._write(connection, batch)
        except Exception as exc:  # every waiter gets an answer
            if len(batch) > 1 and (isinstance(exc, IntegrityError)
                                   or not isinstance(exc, SQLAlchemyError)):
                log.info("A batch of %d inserts failed (%s); retrying each alone",
                         len(batch), type(exc).__name__)
                for item in batch:
                    self._commit([item])
                return
            for item in batch:  # the database itself failed: nobody's row is stored
                item.done.set_exception(exc)
            return
        for item, inserted in zip(batch, results, strict=True):
            item.done.set_result(inserted)

    @staticmethod
    def _write(connection: Connection, batch: list[_Insert]) -> list[bool]:
        results = insert_new(connection, [item.row for item in batch])
        followers = [item.then for item, new in zip(batch, results, strict=True)
                     if new and item.then is not None]
        if followers:
            insert_new(connection, followers)
        return results
