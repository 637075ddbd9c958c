"""SQLite writers take turns on a lock, the ack path first (incidentbot/sqlite_writers.py)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from incidentbot.core import security
from incidentbot.group_commit import GroupCommit, Row
from incidentbot.models import SeenRequest
from incidentbot.sqlite_writers import WriterTurns, is_write

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def insert_ledger(engine: Engine, signature: str) -> None:
    with engine.begin() as connection:
        connection.execute(SeenRequest.__table__.insert().values(
            security.ledger_row(signature, T0)))


def start(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_writes_are_told_from_reads() -> None:
    assert is_write("  insert into t values (1)")
    assert is_write("UPDATE t SET a = 1")
    assert is_write("delete from t")
    assert not is_write("SELECT 1")
    assert not is_write("PRAGMA foreign_keys=ON")


def test_an_ack_path_writer_goes_before_earlier_waiters() -> None:
    turns = WriterTurns(timeout_s=10)
    order: list[str] = []

    def wait(name: str, ack_path: bool) -> None:
        assert turns.take(ack_path=ack_path)
        order.append(name)
        turns.give_back()

    assert turns.take(ack_path=False)
    waiters = [start(wait, f"work{i}", False) for i in range(3)]
    time.sleep(0.2)  # the three are waiting before the ack arrives
    waiters.append(start(wait, "ack", True))
    time.sleep(0.2)
    turns.give_back()
    for thread in waiters:
        thread.join(5)
    assert order[0] == "ack"
    assert sorted(order[1:]) == ["work0", "work1", "work2"]


def test_a_turn_times_out_instead_of_waiting_forever() -> None:
    turns = WriterTurns(timeout_s=0.2)
    assert turns.take(ack_path=False)
    started = time.monotonic()
    assert not turns.take(ack_path=True)
    assert 0.15 < time.monotonic() - started < 2


def test_engine_writers_wait_for_the_turn_and_acks_go_first(sqlite_engine: Engine) -> None:
    """A write transaction holds the turn until its commit; of the two writers waiting
    meanwhile, the ack-path one (GroupCommit, on a driver connection) commits first."""
    finished: list[str] = []
    holder = sqlite_engine.connect()
    transaction = holder.begin()
    holder.execute(SeenRequest.__table__.insert().values(security.ledger_row("v0=hold", T0)))

    def write(name: str) -> None:
        insert_ledger(sqlite_engine, f"v0={name}")
        finished.append(name)

    def ack(name: str) -> None:
        GroupCommit(sqlite_engine).insert(Row(SeenRequest.__table__, security.ledger_row(
            f"v0={name}", T0), security.LEDGER_KEY))
        finished.append(name)

    work = start(write, "work")
    time.sleep(0.2)
    acked = start(ack, "ack")
    time.sleep(0.2)
    assert finished == []  # both wait on the turn, not on SQLite's busy handler
    transaction.commit()
    holder.close()
    work.join(5)
    acked.join(5)
    assert finished == ["ack", "work"]
    with sqlite_engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(SeenRequest)) == 3


def test_rollback_and_invalidation_give_the_turn_back(sqlite_engine: Engine) -> None:
    with pytest.raises(RuntimeError), sqlite_engine.begin() as connection:
        connection.execute(SeenRequest.__table__.insert().values(
            security.ledger_row("v0=rolled-back", T0)))
        raise RuntimeError("the work failed")
    connection = sqlite_engine.connect()
    connection.begin()
    connection.execute(SeenRequest.__table__.insert().values(
        security.ledger_row("v0=lost", T0)))
    connection.invalidate()
    connection.close()
    started = time.monotonic()
    insert_ledger(sqlite_engine, "v0=next")  # would wait 30 s for a turn never given back
    assert time.monotonic() - started < 5
    with sqlite_engine.connect() as reader:
        signatures = reader.scalars(select(SeenRequest.signature)).all()
    assert signatures == ["v0=next"]


WRITE_WHEN_TOLD = """
import sys, time
from sqlalchemy import text
from incidentbot.db import create_db_engine
engine = create_db_engine(sys.argv[1])
print("ready", flush=True)
for round in range(3):
    sys.stdin.readline()
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO seen_requests (signature, seen_at) "
                                f"VALUES ('other-{round}', '2026-11-25 02:00:00')"))
    print(time.monotonic(), flush=True)
"""


def test_a_turn_keeps_writers_of_other_processes_waiting(sqlite_engine: Engine) -> None:
    """The worker process and the server share the turn: the other process's write waits
    for this transaction, then starts at once, not after SQLite's busy handler's next sleep
    (measured here: 1.0-1.6 ms after the commit with the shared turn, 29-30 ms without)."""
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", WRITE_WHEN_TOLD, str(sqlite_engine.url)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert other.stdin is not None and other.stdout is not None
    assert other.stdout.readline().strip() == "ready"
    delays = []
    for round in range(3):
        with sqlite_engine.begin() as connection:
            connection.execute(SeenRequest.__table__.insert().values(
                signature=f"here-{round}", seen_at=T0))
            other.stdin.write("go\n")
            other.stdin.flush()
            time.sleep(0.4)  # the other process is waiting for the turn meanwhile
            assert connection.scalar(select(func.count()).select_from(SeenRequest)) \
                == 2 * round + 1
        released = time.monotonic()
        delays.append(float(other.stdout.readline()) - released)
    assert other.wait(timeout=10) == 0
    assert max(delays) < 0.015, delays
