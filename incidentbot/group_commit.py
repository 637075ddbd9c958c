"""Group commit: the hot-path inserts of many request threads share one statement and commit.

Slack expects an answer within 3 seconds, and the bot answers a request only once it is
stored (its signature in the replay ledger; a channel message in the timeline), so a busy
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

from sqlalchemy import Connection, Engine, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

log = logging.getLogger(__name__)

MAX_BATCH = 256


@dataclass(frozen=True)
class _Insert:
    table: Table
    unique: tuple[str, ...]
    row: Mapping[str, Any]
    done: Future[bool] = field(default_factory=Future)

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(self.row[column] for column in self.unique)


def insert_new(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]],
               unique: Sequence[str]) -> set[tuple[Any, ...]]:
    """Insert the rows whose `unique` key is not stored yet; the keys actually inserted.

    One `INSERT … ON CONFLICT (unique) DO NOTHING RETURNING unique` on SQLite or PostgreSQL.
    """
    columns = tuple(rows[0])
    statement = _insert_statement(connection.dialect.name, table, tuple(unique), columns,
                                  len(rows))
    params = {f"{column}_{i}": row[column] for i, row in enumerate(rows) for column in columns}
    return {tuple(found) for found in connection.execute(statement, params)}


@functools.lru_cache(maxsize=512)
def _insert_statement(dialect: str, table: Table, unique: tuple[str, ...],
                      columns: tuple[str, ...], count: int) -> Any:
    """The multi-row insert for `count` rows, built once so SQLAlchemy compiles it once."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = [{column: bindparam(f"{column}_{i}", type_=table.c[column].type)
               for column in columns} for i in range(count)]
    return dialect_insert(table).values(values) \
        .on_conflict_do_nothing(index_elements=list(unique)) \
        .returning(*(table.c[column] for column in unique))


class GroupCommit:
    """Batches concurrent inserts by leader election (see the module docstring).

    Each caller queues its row and takes the lock; whoever holds it writes and commits
    every row queued so far, its own and others'. A caller whose row a previous holder
    committed just returns. Without contention that is one plain insert in the caller's own
    thread; under load the batch grows with the number of callers waiting.
    """

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Insert] = queue.SimpleQueue()
        self._lock = threading.Lock()

    def insert(self, table: Table, row: Mapping[str, Any], unique: Sequence[str]) -> bool:
        """Insert `row` unless a row with its `unique` columns exists; True if inserted.

        Returns once committed. Raises the database error that stopped the commit.
        """
        item = _Insert(table, tuple(unique), row)
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
        groups: dict[tuple[str, tuple[str, ...]], list[_Insert]] = {}
        for item in batch:
            groups.setdefault((item.table.name, item.unique), []).append(item)
        inserted: set[tuple[str, tuple[Any, ...]]] = set()
        for (name, unique), items in groups.items():
            keys = insert_new(connection, items[0].table, [i.row for i in items], unique)
            inserted.update((name, key) for key in keys)
        results = []
        for item in batch:  # the first of equal keys gets the row, later ones see it stored
            marker = (item.table.name, item.key)
            results.append(marker in inserted)
            inserted.discard(marker)
        return results
