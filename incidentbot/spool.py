"""The spool: on SQLite, a serving process stores each request with work in one append.

A request with work must be stored before Slack gets its answer. Committing it to SQLite
took 420-500 µs of CPU when requests came 10 ms apart (each one meets cold caches: locks,
the WAL and its index, half a dozen page writes), the most expensive step of an answer; one
`write` of the same record to a file took 90 µs. So the serving process appends each such
request to a spool file (`<inbox file>-spool-<n>`) and answers, and its worker process moves
the records into the inbox table (claimed by itself) in the transaction in which it takes its
jobs, recording in `spool_positions` where the next record starts. The write survives the
serving process crashing as a commit with `synchronous=NORMAL` does (both wait in the
operating system's cache).

Each record is framed (`HEAD`: payload length and CRC-32), so a record torn by a crash of the
machine is recognised and skipped. The serving process writes only the newest file: it starts
a new one at every start and when one passes `FILE_BYTES`, so a file with a later one beside
it is complete and, once moved, deleted. Replays are refused from memory (`RecentSignatures`,
loaded at start from the inbox and the files not moved yet), as the inbox's unique signature
refused them before.

A channel message is spooled too, as its timeline row (`SpoolWriter.append_row`), keyed on
what the row is unique on (a message's ts in its incident), so that Slack's retry of a
message spooled within the window stores nothing and a replay is told apart as before. The
worker inserts those rows into the bot's database (`INSERT … ON CONFLICT DO NOTHING`) and
commits them before the position that passes them, so a crash between the two commits only
inserts them again, which stores nothing. A change to a message (a deletion, a key-event
reaction) that finds no row waits for the worker to move what was spooled before it
(`SpoolWriter.wait_moved`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Insert, Table, event, select, update
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from incidentbot import inbox
from incidentbot.core.security import REPLAY_WINDOW
from incidentbot.db import transaction
from incidentbot.group_commit import Row
from incidentbot.models import Base, InboxJob, SpoolPosition

log = logging.getLogger(__name__)

HEAD = struct.Struct("<II")  # payload length, CRC-32 of the payload
FIELDS = struct.Struct("<dHH")  # received at (Unix time), signature and content type lengths
FILE_BYTES = 8 * 1024 * 1024
MOVE_LIMIT = 500  # records moved per transaction
POSITION_ID = 1
POSITIONS = SpoolPosition.__table__
ROW_TYPE = "incidentbot-row;"  # a record's content type: a row, `ROW_TYPE<table>;<unique>`
MOVED_WAIT_S = 1.5  # how long a change to a message not found waits for the worker's move
MOVED_POLL_S = 0.005


class SpoolBehind(Exception):
    """The worker has not moved what was spooled before a change that needs it."""


@dataclass(frozen=True)
class SpooledRequest:
    signature: str
    body: str
    content_type: str
    received_at: datetime


def row_request(row: Row, received_at: datetime) -> SpooledRequest:
    """A row to insert as a spool record, keyed (its `signature`) on its unique columns."""
    content_type = f"{ROW_TYPE}{row.table.name};{','.join(row.unique)}"
    return SpooledRequest(row_key(row.table, [row.values[column] for column in row.unique]),
                          json.dumps(row.values, default=_iso), content_type, received_at)


def row_key(table: Table, unique_values: Iterable[object]) -> str:
    """What a spooled row is known by: its table and the values of its unique columns."""
    return "\x1f".join([table.name, *map(str, unique_values)])


def request_row(request: SpooledRequest) -> Row:
    """The row a record of `row_request` carries."""
    name, _, unique = request.content_type[len(ROW_TYPE):].partition(";")
    table = Base.metadata.tables[name]
    values: dict[str, Any] = json.loads(request.body)
    for column in _datetime_columns(name):
        if isinstance(values.get(column), str):
            values[column] = datetime.fromisoformat(values[column])
    return Row(table, values, tuple(unique.split(",")))


@functools.cache
def _datetime_columns(table_name: str) -> tuple[str, ...]:
    """The columns of a table that hold datetimes (a `DateTime`, or a TypeDecorator's)."""
    return tuple(column.name for column in Base.metadata.tables[table_name].columns
                 if isinstance(getattr(column.type, "impl_instance", column.type), DateTime))


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not stored in a spooled row")


def encode(request: SpooledRequest) -> bytes:
    """One framed record."""
    signature, content_type = request.signature.encode(), request.content_type.encode()
    payload = b"".join((FIELDS.pack(request.received_at.timestamp(), len(signature),
                                    len(content_type)),
                        signature, content_type, request.body.encode()))
    return HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def decode(data: bytes, limit: int = MOVE_LIMIT) -> tuple[list[SpooledRequest], int, bool]:
    """(up to `limit` whole records at the start of `data`, the bytes they take, whether what
    follows them is a record whose checksum does not match)."""
    records: list[SpooledRequest] = []
    used = 0
    while len(records) < limit and len(data) - used >= HEAD.size:
        length, checksum = HEAD.unpack_from(data, used)
        start, end = used + HEAD.size, used + HEAD.size + length
        if end > len(data):
            break
        payload = memoryview(data)[start:end]
        if zlib.crc32(payload) != checksum or length < FIELDS.size:
            return records, used, True
        records.append(_request(payload))
        used = end
    return records, used, False


def _request(payload: memoryview) -> SpooledRequest:
    received, signature_len, type_len = FIELDS.unpack_from(payload)
    at = FIELDS.size
    signature = bytes(payload[at:at + signature_len]).decode()
    at += signature_len
    content_type = bytes(payload[at:at + type_len]).decode()
    body = bytes(payload[at + type_len:]).decode()
    return SpooledRequest(signature, body, content_type, datetime.fromtimestamp(received, UTC))


def spool_files(base: Path) -> dict[int, Path]:
    """The spool files beside `base` (the inbox file), by number, oldest first."""
    prefix = f"{base.name}-spool-"
    numbers = sorted(int(name[len(prefix):]) for name in os.listdir(base.parent)
                     if name.startswith(prefix) and name[len(prefix):].isdigit())
    return {number: spool_path(base, number) for number in numbers}


def spool_path(base: Path, number: int) -> Path:
    return base.with_name(f"{base.name}-spool-{number:06d}")


def read_position(connection: Connection) -> tuple[int, int] | None:
    """(file, offset) of the worker's next record; None before its first move."""
    row = connection.execute(_SELECT_POSITION).first()
    return (row[0], row[1]) if row else None


class RecentSignatures:
    """The signatures of the requests accepted in the last `REPLAY_WINDOW` (older requests
    fail Bolt's timestamp check before they get here)."""

    def __init__(self, window_s: float = REPLAY_WINDOW.total_seconds(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._expiry: dict[str, float] = {}

    def add(self, signature: str) -> bool:
        """Remember `signature`; False if it was seen within the window."""
        now = self._clock()
        self._forget_before(now)
        if signature in self._expiry:
            return False
        self._expiry[signature] = now + self._window_s
        return True

    def __contains__(self, signature: str) -> bool:
        return signature in self._expiry

    def discard(self, signature: str) -> None:
        self._expiry.pop(signature, None)

    def __len__(self) -> int:
        return len(self._expiry)

    def _forget_before(self, now: float) -> None:
        expiry = self._expiry
        while expiry:
            oldest = next(iter(expiry))
            if expiry[oldest] > now:
                return
            del expiry[oldest]


class SpoolWriter:
    """A serving process's side: `append` a request or `append_row` a row (False: a replay,
    or a row spooled before), in one `write`."""

    def __init__(self, base: Path, number: int, recent: RecentSignatures,
                 clock: Callable[[], datetime], sessions: sessionmaker[Session],
                 file_bytes: int = FILE_BYTES, *,
                 left_until: tuple[int, int] | None = None,
                 wake: Callable[[], None] | None = None) -> None:
        """`left_until`: where the records an earlier process spooled end; `wake`: called
        after each record appended (the worker's wake-up)."""
        self._base = base
        self._recent = recent
        self._clock = clock
        self._sessions = sessions
        self._file_bytes = file_bytes
        self._lock = threading.Lock()
        self._number, self._fd = _create_after(base, number - 1)
        self._size = 0
        self._written = left_until  # where the last record appended ends
        self._wake = wake

    @classmethod
    def open(cls, base: Path, sessions: sessionmaker[Session], clock: Callable[[], datetime],
             file_bytes: int = FILE_BYTES,
             wake: Callable[[], None] | None = None) -> SpoolWriter:
        """Start a new file after every existing one, remembering the signatures of the
        inbox's recent requests and the keys of the records its worker has not moved yet."""
        recent = RecentSignatures()
        with transaction(sessions) as session:
            first, offset = read_position(session.connection()) or (0, 0)
            since = clock() - REPLAY_WINDOW
            for signature in session.scalars(
                    select(InboxJob.signature).where(InboxJob.received_at >= since)
                    .order_by(InboxJob.id)):
                recent.add(signature)
        files = spool_files(base)
        left_until = None
        for number, path in files.items():
            if number >= first:
                for request in read_all(path, offset if number == first else 0):
                    recent.add(request.signature)
                left_until = (number, _size(path))
        return cls(base, max([first, *files]) + 1, recent, clock, sessions, file_bytes,
                   left_until=left_until, wake=wake)

    def append(self, signature: str, body: str, content_type: str) -> bool:
        return self._append(SpooledRequest(signature, body, content_type, self._clock()))

    def append_row(self, row: Row) -> bool:
        """Spool a row for the worker to insert; False if one with the same unique values
        was spooled within the replay window (Slack's retry of a message, or a replay)."""
        return self._append(row_request(row, self._clock()))

    def holds(self, key: str) -> bool:
        """Whether a row known by `key` (`row_key`) was spooled within the replay window."""
        return key in self._recent

    def wait_moved(self, timeout_s: float = MOVED_WAIT_S) -> None:
        """Return once the worker has moved every record appended so far; `SpoolBehind` if
        it has not within `timeout_s`."""
        with self._lock:
            target = self._written
        if target is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            with self._sessions() as session:
                moved = read_position(session.connection()) or (0, 0)
            if moved >= target:
                return
            if time.monotonic() >= deadline:
                raise SpoolBehind(f"the worker has moved the spool to {moved}, not {target}")
            time.sleep(MOVED_POLL_S)

    def _append(self, request: SpooledRequest) -> bool:
        record = encode(request)
        with self._lock:
            if not self._recent.add(request.signature):
                return False
            try:
                self._write(record)
            except OSError:
                self._recent.discard(request.signature)
                raise
            self._written = (self._number, self._size)
            if self._size >= self._file_bytes:
                self._next_file()
        if self._wake is not None:
            self._wake()
        return True

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)

    def _write(self, record: bytes) -> None:
        try:
            written = os.write(self._fd, record)
        except OSError:
            self._truncate()
            raise
        if written != len(record):  # the disk is full: leave no partial record behind
            self._truncate()
            raise OSError(errno.ENOSPC, "the spool file is full")
        self._size += written

    def _truncate(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, self._size)

    def _next_file(self) -> None:
        try:
            number, fd = _create_after(self._base, self._number)
        except OSError as exc:
            log.warning("Could not start a new spool file (%s); writing on", exc)
            return
        os.close(self._fd)
        self._fd, self._number, self._size = fd, number, 0


def _create_after(base: Path, number: int) -> tuple[int, int]:
    """A new spool file numbered after `number` (and after any file created meanwhile)."""
    while True:
        number += 1
        try:
            return number, os.open(spool_path(base, number),
                                   os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue


def read_all(path: Path, offset: int = 0) -> list[SpooledRequest]:
    """Every whole record of a file from `offset` (none if it is gone)."""
    data = _read_from(path, offset)
    records, _used, _bad = decode(data, limit=len(data))
    return records


class SpoolReader:
    """A worker's side: `move` the records its serving process spooled into the inbox, and
    the rows into the bot's database (`rows`).

    Statements go through SQLAlchemy Core on the session's connection: through the ORM a
    move of one record took 3 ms of CPU. After a move that found nothing new, the next one
    first compares the file's size with the end it reached, without a statement (a worker
    looks after every job it finishes)."""

    def __init__(self, base: Path, worker: str, rows: sessionmaker[Session],
                 limit: int = MOVE_LIMIT) -> None:
        self._base = base
        self._worker = worker
        self._limit = limit
        self._rows = rows
        self._idle_at: tuple[Path, int] | None = None  # (file, size) a move found no more in
        self._committed: tuple[int, int] | None = None  # the position, as last committed

    def intake(self, session: Session) -> bool:
        """`move`, as an inbox worker's intake: True if it stopped at its limit (more may be
        waiting)."""
        return self.move(session) >= self._limit

    def move(self, session: Session) -> int:
        """Insert, claimed by this worker, up to `limit` records after the position, and
        advance it (in `session`'s transaction). Files before it are deleted."""
        if self._idle_at is not None and _size(self._idle_at[0]) == self._idle_at[1]:
            return 0
        connection = session.connection()
        saved, self._committed = self._committed or read_position(connection), None
        number, offset = saved or (0, 0)
        files = spool_files(self._base)
        self._delete_before(number, files)
        moved = 0
        while moved < self._limit:
            later = [n for n in files if n > number]
            if number not in files:
                if not later:
                    break
                number, offset = later[0], 0
                continue
            final = bool(later)  # the serving process writes only its newest file
            data = _read_from(files[number], offset)
            records, used, bad = decode(data, self._limit - moved)
            self._insert(connection, records)
            offset += used
            moved += len(records)
            if moved >= self._limit or not final:
                break  # the rest in the next transaction, or once written
            if used < len(data):
                log.warning("Skipped %d bytes at the end of %s (%s)", len(data) - used,
                            files[number].name, "a bad record" if bad else "a torn record")
            number, offset = later[0], 0
        if (number, offset) != saved:
            _save_position(connection, number, offset, exists=saved is not None)
        event.listen(session, "after_commit", partial(self._remember, (number, offset)),
                     once=True)
        caught_up = not moved and number in files and _size(files[number]) == offset
        self._idle_at = (files[number], offset) if caught_up else None
        return moved

    def _remember(self, committed: tuple[int, int], _session: Session) -> None:
        self._committed = committed

    def _insert(self, connection: Connection, records: list[SpooledRequest]) -> None:
        """Rows first, committed (in the bot's database) before the position that passes
        them; then the requests, claimed by this worker, in the inbox's transaction."""
        rows: list[Row] = []
        jobs: list[SpooledRequest] = []
        for record in records:
            if record.content_type.startswith(ROW_TYPE):
                rows.append(request_row(record))
            else:
                jobs.append(record)
        if rows:
            self._insert_rows(rows)
        if jobs:
            connection.execute(_INSERT, [
                inbox.job_row(r.signature, r.body, r.content_type, r.received_at, self._worker)
                for r in jobs])

    def _insert_rows(self, rows: list[Row]) -> None:
        """In one transaction; if the database refuses one (its incident is gone, say), one
        transaction each, dropping the refused ones with an error: one bad row must not hold
        up all that follows it."""
        try:
            self._insert_in_one(rows)
        except IntegrityError:
            for row in rows:
                try:
                    self._insert_in_one([row])
                except IntegrityError as exc:
                    log.error("Dropped a spooled %s row the database refuses (%s): %s",
                              row.table.name, type(exc.orig).__name__, dict(row.values))

    def _insert_in_one(self, rows: list[Row]) -> None:
        batches: dict[tuple[Table, tuple[str, ...]], list[Mapping[str, Any]]] = {}
        for row in rows:
            batches.setdefault((row.table, row.unique), []).append(row.values)
        with transaction(self._rows) as session:
            connection = session.connection()
            for (table, unique), values in batches.items():
                connection.execute(_insert_ignoring(table, unique), values)

    @staticmethod
    def _delete_before(number: int, files: dict[int, Path]) -> None:
        for older in [n for n in files if n < number]:
            with contextlib.suppress(FileNotFoundError):
                files.pop(older).unlink()


def _insert_ignoring(table: Table, unique: tuple[str, ...]) -> Insert:
    return insert(table).on_conflict_do_nothing(index_elements=list(unique))


_INSERT = insert(InboxJob.__table__).on_conflict_do_nothing(index_elements=list(inbox.INBOX_KEY))


_SELECT_POSITION = select(POSITIONS.c.file, POSITIONS.c.offset).where(
    POSITIONS.c.id == POSITION_ID)
_UPDATE_POSITION = update(POSITIONS).where(POSITIONS.c.id == POSITION_ID)


def _save_position(connection: Connection, number: int, offset: int, *, exists: bool) -> None:
    values = {"file": number, "offset": offset}
    if exists:
        connection.execute(_UPDATE_POSITION, values)
    else:
        connection.execute(POSITIONS.insert(), {"id": POSITION_ID, **values})


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read()
    except FileNotFoundError:
        return b""

