"""SQLite writers of one process take turns on a lock, acks first.

SQLite admits one writer at a time. A second one waits in SQLite's busy handler, which
sleeps in growing steps (up to 100 ms) between attempts; under steady writes from many
threads that sleep, not the work, sets the latency, and an ack recording its request could
wait a quarter of a second behind the declarations being worked on. Here a write
transaction takes a turn at its first write and gives it back when its connection returns
to the pool (after the commit or rollback): waiters block on a condition and the next one
starts the moment the turn is free. The inserts a request waits on before Slack gets its
answer (`GroupCommit`, on its own driver connection: `take(ack_path=True)`, then
`give_back()`) go before the others.

Between processes (the server and its worker process), a turn also holds an exclusive
`flock` on `<database>.writers`: a writer of the other process waiting for it retries every
half millisecond, where SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between
attempts (`test_a_turn_keeps_writers_of_other_processes_waiting`: the other process wrote
1.0-1.6 ms after the commit with this, 29-30 ms without). Writers that take no turn (the CLI, a
migration) still meet SQLite's busy handler. A turn never waits longer than the busy
timeout; after that, SQLite's own locking decides.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.pool import Pool

CROSS_PROCESS_RETRY_S = 0.0005
WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
HELD = "incidentbot_write_turn"
_ATTACHED: weakref.WeakKeyDictionary[Pool, WriterTurns] = weakref.WeakKeyDictionary()


class WriterTurns:
    """One writer at a time per engine; writers on the ack path are served first."""

    def __init__(self, timeout_s: float, lock_path: str | None = None) -> None:
        self._timeout_s = timeout_s
        self._changed = threading.Condition()
        self._taken = False
        self._acks_waiting = 0
        self._lock_file = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600) \
            if lock_path else None

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before_execute)
        event.listen(engine.pool, "checkin", self._returned)
        event.listen(engine.pool, "invalidate", self._returned)
        _ATTACHED[engine.pool] = self

    @staticmethod
    def of(engine: Engine) -> WriterTurns | None:
        """The turns attached to this engine's pool, if any (SQLite engines)."""
        return _ATTACHED.get(engine.pool)

    def take(self, *, ack_path: bool) -> bool:
        """Wait for the turn (False after the timeout)."""
        with self._changed:
            self._acks_waiting += ack_path
            try:
                taken = self._changed.wait_for(
                    lambda: not self._taken and (ack_path or not self._acks_waiting),
                    self._timeout_s)
            finally:
                self._acks_waiting -= ack_path
            self._taken = self._taken or taken
        if taken:
            self._lock_other_processes_out(time.monotonic() + self._timeout_s)
        return taken

    def give_back(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        with self._changed:
            self._taken = False
            self._changed.notify_all()

    def _lock_other_processes_out(self, deadline: float) -> None:
        """Hold the lock file (until the deadline; then SQLite's own locking decides)."""
        if self._lock_file is None:
            return
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                time.sleep(CROSS_PROCESS_RETRY_S)

    def _before_execute(self, connection: Connection, _cursor: Any, statement: str,
                        *_args: Any) -> None:
        if connection.info.get(HELD) or not is_write(statement):
            return
        connection.info[HELD] = self.take(ack_path=False)

    def _returned(self, _dbapi_connection: Any, record: Any, *_args: Any) -> None:
        if record is not None and record.info.pop(HELD, False):
            self.give_back()


def is_write(statement: str) -> bool:
    return statement.lstrip()[:7].upper().startswith(WRITE_VERBS)
