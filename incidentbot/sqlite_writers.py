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

Writers in other processes (the CLI, a migration) still meet SQLite's busy handler. A turn
never waits longer than the busy timeout; after that, SQLite's own locking decides.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.pool import Pool

WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
HELD = "incidentbot_write_turn"
_ATTACHED: weakref.WeakKeyDictionary[Pool, WriterTurns] = weakref.WeakKeyDictionary()


class WriterTurns:
    """One writer at a time per engine; writers on the ack path are served first."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._changed = threading.Condition()
        self._taken = False
        self._acks_waiting = 0

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
            return taken

    def give_back(self) -> None:
        with self._changed:
            self._taken = False
            self._changed.notify_all()

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
