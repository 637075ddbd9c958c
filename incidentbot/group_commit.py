"""Group commit: the hot-path inserts of many request threads share one transaction.

Slack expects an answer within 3 seconds, and the bot answers a request only once it is
stored (a channel message in the timeline, any other request's signature in the replay
ledger), so a busy channel means many tiny concurrent write transactions. On SQLite they
queue on the single write lock; on PostgreSQL each pays a commit. Here one caller at a time
takes every insert waiting, writes each with an `INSERT … ON CONFLICT DO NOTHING RETURNING
1` and commits them all once. Each caller returns only after its own row is committed,
learning whether it was new, exactly as if it had inserted alone: a row whose key is
already stored, or came earlier in the same batch, is not new.

On SQLite a leader keeps the interpreter lock through its short calls into SQLite, so on one
core the request threads behind it rarely reach their insert before it commits: under the
ingest bench's burst, 1.17 rows per commit, each message paying a commit of its own. So,
like PostgreSQL's `commit_delay`, a leader that finds the previous commit ended less than
`BUSY_GAP_S` ago (the server is committing over a thousand times a second) first sleeps
`COMMIT_DELAY_S`, and the rows of the requests behind it join its batch. Below that rate
nothing waits (the commits of answers at 300 requests/s are 3 ms apart). Frequent commits
are not always a crowd: one caller inserting back to back (a replay, a script) has nobody
to gather, so waits that keep gathering nobody stop for a while (`CommitDelay`). A worker
process's writes (`delay_s=0`) have no answers behind them to gather, only steps of one
job."""

from __future__ import annotations

import contextlib
import logging
import re
import select
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Dialect, Engine, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from incidentbot.sqlite_writers import WriterTurns

log = logging.getLogger(__name__)

MAX_BATCH = 256
BUSY_GAP_S = 0.001
COMMIT_DELAY_S = 0.0003  # SQLite only: on PostgreSQL the commit's round trip already gathers
IDLE_PROBE_S = 0.5  # PostgreSQL: a connection idle this long opens its batch with a `BEGIN`
FRUITLESS_WAITS = 3  # waits in a row that gathered no other row ...
SKIPPED_WAITS = 64  # ... after which this many are skipped before the next try


@dataclass(frozen=True)
class Row:
    """One row to insert into `table` unless a row with the same `unique` columns exists."""

    table: Table
    values: Mapping[str, Any]
    unique: tuple[str, ...]


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False, slots=True)
class _Insert:
    """A queued row; a leader sets its outcome, then releases `wake` (also released to hand
    its caller the lead), on which its caller waits."""

    row: Row
    done: bool = False
    inserted: bool = False
    error: BaseException | None = None
    wake: threading.Lock = field(default_factory=_held_lock)

    def outcome(self) -> bool:
        if self.error is not None:
            raise self.error
        return self.inserted


class RowStatements:
    """`INSERT … VALUES (…)[, (…)] ON CONFLICT (unique) DO NOTHING RETURNING unique`, compiled
    once per table, columns and row count by SQLAlchemy for the engine's dialect, and run on
    the driver's own cursor.

    A request waits for this insert before Slack gets its answer. Through `Connection.execute`
    a ledger and a message insert with their commit took 440–600 µs on SQLite here, on the
    driver 140–190 µs; the SQL text, its parameter order and each column's bind processing
    (JSON, UTC datetimes) still come from SQLAlchemy. On PostgreSQL one statement carries a
    table's rows of a batch: for batches of 4 ledger rows, 67–75 µs of client CPU per row
    instead of 96–112 with psycopg's pipelined `executemany`, and 167–176 µs of wall time
    instead of 203–223. SQLite, in-process, runs a statement per row: there a multi-row
    statement cost the same for batches of 4 or 8 and more for a row alone.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: dict[tuple[_Shape, int], _Statement] = {}

    def insert_all(self, cursor: Any, rows: Sequence[Row]) -> list[bool]:
        """Insert each row whose key is not stored yet; for each, whether it was inserted (of
        rows with equal keys, only the first can be: rows are inserted in order, and the
        keys a multi-row statement returns are matched to its rows in order)."""
        if self._dialect.name != "postgresql":
            return [self._insert_one(cursor, row) for row in rows]
        groups: dict[_Shape, list[int]] = {}
        for index, row in enumerate(rows):
            groups.setdefault(_shape(row), []).append(index)
        inserted = [False] * len(rows)
        for shape, indices in groups.items():
            statement = self.statement(shape, len(indices))
            bound = [statement.bound(rows[i].values) for i in indices]
            cursor.execute(statement.sql, statement.parameters(bound))
            stored = Counter(tuple(found) for found in cursor.fetchall())
            for index, values in zip(indices, bound, strict=True):
                key = statement.key(values)
                if stored[key]:
                    stored[key] -= 1
                    inserted[index] = True
        return inserted

    def one_statement(self, rows: Sequence[Row]) -> bool:
        """Whether `insert_all` writes these rows with a single statement (PostgreSQL, one
        table and set of columns)."""
        return self._dialect.name == "postgresql" and len({_shape(row) for row in rows}) == 1

    def _insert_one(self, cursor: Any, row: Row) -> bool:
        statement = self.statement(_shape(row), 1)
        cursor.execute(statement.sql, statement.parameters([statement.bound(row.values)]))
        return cursor.fetchone() is not None

    def statement(self, shape: _Shape, count: int) -> _Statement:
        found = self._compiled.get((shape, count))
        if found is None:
            found = self._compiled[(shape, count)] = _Statement.compile(
                self._dialect, shape, count)
        return found


_Shape = tuple[Table, tuple[str, ...], tuple[str, ...]]  # table, columns given, unique key


def _shape(row: Row) -> _Shape:
    return row.table, tuple(row.values), row.unique


@dataclass(frozen=True, eq=False)
class _Statement:
    sql: str
    columns: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    order: tuple[tuple[int, int], ...]  # (row, column) of each parameter, in order
    names: tuple[str, ...]  # each parameter's name (named parameter styles)
    positional: bool
    key_columns: tuple[int, ...]

    @classmethod
    def compile(cls, dialect: Dialect, shape: _Shape, count: int) -> _Statement:
        table, columns, unique = shape
        dialect_insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        statement = dialect_insert(table).values([
            {column: bindparam(f"r{row}c{position}", type_=table.c[column].type)
             for position, column in enumerate(columns)} for row in range(count)
        ]).on_conflict_do_nothing(index_elements=list(unique)).returning(
            *(table.c[column] for column in unique))
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or compiled.bind_names.values())
        parsed = [_PARAMETER.fullmatch(name) for name in names]
        if len(names) != count * len(columns) or not all(parsed):
            raise ValueError(f"{table.name}: give every column that has a default; the "
                             f"statement binds {sorted(set(names))[:8]}")
        processors = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                           for name in columns)
        order = tuple((int(match[1]), int(match[2])) for match in parsed if match)
        return cls(compiled.string, columns, processors, order, names,
                   bool(compiled.positiontup),
                   tuple(columns.index(column) for column in unique))

    def bound(self, values: Mapping[str, Any]) -> list[Any]:
        """One row's values as the driver takes them, in `columns` order."""
        return [values[name] if process is None else process(values[name])
                for name, process in zip(self.columns, self.processors, strict=True)]

    def parameters(self, rows: Sequence[list[Any]]) -> Sequence[Any] | dict[str, Any]:
        flat = [rows[row][column] for row, column in self.order]
        return flat if self.positional else dict(zip(self.names, flat, strict=True))

    def key(self, bound: list[Any]) -> tuple[Any, ...]:
        """A bound row's unique key, as `RETURNING` gives it back."""
        return tuple(bound[i] for i in self.key_columns)


_PARAMETER = re.compile(r"r(\d+)c(\d+)")


class CommitDelay:
    """Whether a leader waits for more rows before it commits (module docstring).

    It waits while commits are frequent (the last one ended under `BUSY_GAP_S` ago), unless
    its last `FRUITLESS_WAITS` waits in a row gathered no row but the leader's own: then the
    next `SKIPPED_WAITS` chances are skipped, and one wait tries again. A lone caller
    inserting back to back then waits about once in 65 commits instead of at every one.
    Used by the leader only (one at a time).
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._last_commit = -BUSY_GAP_S  # monotonic time the last batch ended
        self._fruitless = 0
        self._skip = 0

    def wait(self) -> bool:
        """Sleep `delay_s` if it is worth it; whether it slept."""
        if not self.delay_s or time.monotonic() - self._last_commit >= BUSY_GAP_S:
            return False
        if self._skip:
            self._skip -= 1
            return False
        time.sleep(self.delay_s)
        return True

    def gathered(self, rows: int) -> None:
        """After a wait: how many rows the batch held."""
        if rows > 1:
            self._fruitless = 0
            return
        self._fruitless += 1
        if self._fruitless >= FRUITLESS_WAITS:
            self._skip = SKIPPED_WAITS
            self._fruitless = FRUITLESS_WAITS - 1  # a fruitless try skips again at once

    def committed(self) -> None:
        self._last_commit = time.monotonic()


def _closed_by_server(connection: Any) -> bool:
    """Whether an idle PostgreSQL connection has something to read: nothing was asked, so
    the server has said goodbye (it is shutting down) or closed the socket."""
    try:
        return bool(select.select([connection.dbapi_connection.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _LostBeforeCommit(Exception):
    def __init__(self, error: DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


class GroupCommit:
    """Batches concurrent inserts by leader election (see the module docstring).

    Each caller queues its row and, when no other caller leads, leads: it writes and commits
    every row queued so far, its own and others'. A caller whose row a leader committed
    just returns. Without contention that is one plain insert in the caller's own thread;
    under load the batch grows with the number of callers waiting.
    """

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH,
                 delay_s: float = COMMIT_DELAY_S) -> None:
        self._engine = engine
        self._delay = CommitDelay(delay_s if engine.dialect.name == "sqlite" else 0.0)
        self._autocommit = engine.dialect.name == "postgresql"  # see `_write_once`
        self._used_at = -IDLE_PROBE_S  # monotonic time of the last batch written
        self._statements = RowStatements(engine.dialect)
        self._turns = WriterTurns.of(engine)
        self._max_batch = max_batch
        self._pending: deque[_Insert] = deque()
        self._state = threading.Lock()  # guards `_pending` and `_leading`
        self._leading = False
        self._lock = threading.Lock()  # the connection's: held by a leader, or by `close`
        self._connection: Any = None  # kept checked out; used under `_lock` only

    def insert(self, row: Row) -> bool:
        """Insert `row` unless a row with its key exists; True if inserted.

        Returns once committed. Raises the database error that stopped the commit (as
        SQLAlchemy's exception).

        A caller that finds a leader waits on its own row's lock, which is released once:
        when a leader has committed the row, or to hand the caller the lead. (Waiting on one
        condition that each leader signalled woke every waiter after every batch, and most
        went back to sleep: the ingest bench's serving process spent its core on it.)
        """
        item = _Insert(row)
        with self._state:
            self._pending.append(item)
            lead, self._leading = not self._leading, True
        if not lead:
            item.wake.acquire()
        while not item.done:
            self._lead(item)
        return item.outcome()

    def _lead(self, leader: _Insert) -> None:
        """Commit the rows queued so far (up to the batch limit); wake their callers; then
        keep the lead if `leader`'s row is still queued, else pass it to the oldest caller
        waiting, or give it up. Under a burst, first wait for more rows (module docstring)."""
        waited = self._delay.wait()
        with self._state:
            batch = [self._pending.popleft()
                     for _ in range(min(len(self._pending), self._max_batch))]
        if waited:
            self._delay.gathered(len(batch))
        stopped = False
        try:
            with self._lock:
                self._commit(batch)
                self._delay.committed()
        except BaseException as exc:  # (`_commit` answers database errors itself)
            stopped = True
            for item in batch:
                if not item.done:
                    item.error, item.done = exc, True
            raise
        finally:
            successor = None
            with self._state:
                if leader.done or stopped:
                    successor = self._pending[0] if self._pending else None
                    self._leading = successor is not None
            for item in batch:
                if item is not leader:
                    item.wake.release()
            if successor is not None:
                successor.wake.release()

    def _commit(self, batch: list[_Insert]) -> None:
        try:
            results = self._write(batch)
        except Exception as exc:  # every waiter gets an answer
            if len(batch) > 1 and (isinstance(exc, IntegrityError)
                                   or not isinstance(exc, SQLAlchemyError)):
                log.info("A batch of %d inserts failed (%s); retrying each alone",
                         len(batch), type(exc).__name__)
                for item in batch:
                    self._commit([item])
                return
            for item in batch:  # the database itself failed: nobody's row is stored
                item.error, item.done = exc, True
            return
        for item, inserted in zip(batch, results, strict=True):
            item.inserted, item.done = inserted, True

    def _open(self) -> Any:
        """This object's own driver connection; on PostgreSQL in autocommit mode, and so
        detached from the pool (closed, never handed to anyone else, when dropped)."""
        connection = self._engine.raw_connection()
        if self._autocommit:
            connection.detach()
            connection.rollback()  # a pool's ping may have opened a transaction
            connection.dbapi_connection.autocommit = True
        return connection

    def close(self) -> None:
        """Give the connection back (at shutdown, before the engine is disposed)."""
        with self._lock:
            self._drop_connection()

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def _write(self, batch: list[_Insert]) -> list[bool]:
        """One transaction on this object's own driver connection (no pool checkout and no
        pre-ping per batch), the rows in order. A connection found lost before the commit
        was sent (a database restart) is replaced and the batch written again, once."""
        try:
            return self._write_once(batch)
        except _LostBeforeCommit:
            log.warning("Database connection lost; writing the batch on a new one")
        try:
            return self._write_once(batch)
        except _LostBeforeCommit as lost:
            raise lost.error from None

    def _write_once(self, batch: list[_Insert]) -> list[bool]:
        """Driver errors are raised as SQLAlchemy's; a lost connection is dropped.

        On PostgreSQL the connection is in autocommit mode: a batch of one table is one
        statement, its own transaction (one round trip instead of three: `BEGIN`, the
        insert, `COMMIT`). A connection the server has closed while it sat idle (a restart)
        is found before anything is sent and replaced. One that died silently (a proxy or
        the network dropped it) fails only when used, and a failed lone statement may have
        committed; so after `IDLE_PROBE_S` without a batch, and for batches of several
        tables, the batch is wrapped in `BEGIN` … `COMMIT`: a `BEGIN` that fails proves
        nothing was committed, and the batch is written again on a new connection."""
        dialect = self._engine.dialect
        if self._autocommit and self._connection is not None \
                and _closed_by_server(self._connection):
            log.warning("The database closed the connection; opening a new one")
            self._drop_connection()
        recent = time.monotonic() - self._used_at < IDLE_PROBE_S
        if self._connection is None:
            try:
                self._connection, recent = self._open(), True
            except dialect.loaded_dbapi.Error as exc:  # as `Engine.connect` would raise it
                raise self._translated(exc) from exc
        connection, cursor, committing = self._connection, None, False
        rows = [item.row for item in batch]
        alone = self._autocommit and recent and self._statements.one_statement(rows)
        taken = self._turns is not None and self._turns.take(ack_path=True)
        try:
            cursor = connection.cursor()
            if self._autocommit and not alone:
                cursor.execute("BEGIN")
            committing = alone  # that statement commits itself
            results = self._statements.insert_all(cursor, rows)
            committing = True
            if not alone:
                cursor.execute("COMMIT") if self._autocommit else connection.commit()
            self._used_at = time.monotonic()
            return results
        except dialect.loaded_dbapi.Error as exc:
            translated = self._translated(exc, connection, cursor)
            if not translated.connection_invalidated:
                with contextlib.suppress(dialect.loaded_dbapi.Error):
                    connection.rollback()
                raise translated from exc
            self._drop_connection()
            if committing:  # it may have committed: the caller must not guess
                raise translated from exc
            raise _LostBeforeCommit(translated) from exc
        except BaseException:
            with contextlib.suppress(dialect.loaded_dbapi.Error):
                connection.rollback()
            raise
        finally:
            if taken:
                self._turns.give_back()

    def _translated(self, exc: Exception, connection: Any = None,
                    cursor: Any = None) -> DBAPIError:
        """SQLAlchemy's exception for a driver error; a lost connection leaves the pool."""
        dialect = self._engine.dialect
        lost = connection is not None and dialect.is_disconnect(
            exc, connection.dbapi_connection, cursor)
        if lost:
            connection.invalidate(exc)
        return DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error,
                                   connection_invalidated=lost, dialect=dialect)
