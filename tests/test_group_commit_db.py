"""GroupCommit against real databases: batched inserts answer each caller as if alone."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from incidentbot import group_commit
from incidentbot.core import security, timeline
from incidentbot.group_commit import GroupCommit, Row, RowStatements
from incidentbot.models import Incident, SeenRequest, TimelineEvent

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
LEDGER = SeenRequest.__table__
EVENTS = TimelineEvent.__table__


def ledger(signature: str) -> Row:
    return Row(LEDGER, security.ledger_row(signature, T0), security.LEDGER_KEY)


def message(incident_id: int, ts: str, text: str = "") -> Row:
    return Row(EVENTS, timeline.message_row(
        incident_id, user_id="U1", text=text or f"m {ts}", ts=ts, thread_ts=None,
        occurred_at=T0), timeline.EVENT_KEY)


def new_incident(engine: Engine) -> int:
    with engine.begin() as connection:
        return int(connection.execute(Incident.__table__.insert().values(
            title="t", severity="SEV2", status="investigating", declared_by="U1",
            declared_at=T0, channel_id="C1", channel_name="inc-1",
        ).returning(Incident.__table__.c.id)).scalar_one())


def count(engine: Engine, model: type) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(model)) or 0)


def test_a_key_is_new_once_whoever_inserts_it(engine: Engine) -> None:
    writes = GroupCommit(engine)
    assert writes.insert(ledger("v0=a"))
    assert not writes.insert(ledger("v0=a"))
    assert count(engine, SeenRequest) == 1


def test_equal_keys_in_one_batch_make_one_row_and_one_winner(engine: Engine) -> None:
    """Forty threads insert ten keys four times each, all at once: ten rows, ten winners."""
    writes = GroupCommit(engine)
    start = threading.Barrier(40)
    winners: list[str] = []
    lock = threading.Lock()

    def insert(key: str) -> None:
        start.wait()
        if writes.insert(ledger(key)):
            with lock:
                winners.append(key)

    threads = [threading.Thread(target=insert, args=(f"v0=k{i % 10}",)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(winners) == sorted(f"v0=k{i}" for i in range(10))
    assert count(engine, SeenRequest) == 10


def test_a_batch_says_of_each_row_whether_it_was_inserted(engine: Engine) -> None:
    """A batch as a leader takes it, mixing two tables, a key stored before and keys given
    twice (on PostgreSQL one multi-row statement per table): only the first row of each new
    key is inserted, and each row is told so."""
    incident_id = new_incident(engine)
    assert GroupCommit(engine).insert(ledger("v0=stored"))
    rows = [ledger("v0=a"), message(incident_id, "1700000000.000001"), ledger("v0=stored"),
            ledger("v0=a"), message(incident_id, "1700000000.000001"),
            message(incident_id, "1700000000.000002"), ledger("v0=b")]
    connection = engine.raw_connection()
    try:
        inserted = RowStatements(engine.dialect).insert_all(connection.cursor(), rows)
        connection.commit()
    finally:
        connection.close()
    assert inserted == [True, True, False, False, False, True, True]
    assert count(engine, SeenRequest) == 3
    assert count(engine, TimelineEvent) == 2


def test_concurrent_messages_of_two_tables_are_all_stored(engine: Engine) -> None:
    incident_id = new_incident(engine)
    writes = GroupCommit(engine)

    def post(worker: int) -> None:
        for i in range(25):
            ts = f"1700000000.{worker:03d}{i:03d}"
            writes.insert(ledger(f"v0={ts}"))
            assert writes.insert(message(incident_id, ts))

    threads = [threading.Thread(target=post, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert count(engine, TimelineEvent) == 200
    assert count(engine, SeenRequest) == 200


def test_a_row_breaking_a_constraint_fails_alone(engine: Engine) -> None:
    """A message for a missing incident (foreign key) fails; the others in its batch land."""
    writes = GroupCommit(engine)
    results: dict[str, object] = {}
    start = threading.Barrier(6)

    def insert(name: str, incident_id: int) -> None:
        start.wait()
        try:
            results[name] = writes.insert(message(incident_id, f"1.{name}", name))
        except Exception as exc:
            results[name] = exc

    real = new_incident(engine)
    names = [("00001", real), ("00002", real), ("00003", 999_999), ("00004", real),
             ("00005", real), ("00006", real)]
    threads = [threading.Thread(target=insert, args=pair) for pair in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert isinstance(results.pop("00003"), Exception)
    assert results == {name: True for name, _ in names if name != "00003"}
    assert count(engine, TimelineEvent) == 5


def test_a_database_failure_reaches_the_caller(engine: Engine) -> None:
    writes = GroupCommit(engine)
    with engine.begin() as connection:
        connection.execute(SeenRequest.__table__.delete())
    SeenRequest.__table__.drop(engine)
    with pytest.raises((OperationalError, ProgrammingError)):
        writes.insert(ledger("v0=x"))


def test_rows_read_back_as_the_orm_wrote_them(engine: Engine) -> None:
    """The driver-level insert binds values as SQLAlchemy would: aware UTC datetimes, JSON,
    booleans and NULLs come back unchanged through the ORM."""
    incident_id = new_incident(engine)
    row = message(incident_id, "1700000000.000100", "db failover <@U2> ✓")
    assert GroupCommit(engine).insert(Row(EVENTS, {**row.values, "data": {"k": [1, "ü"]}},
                                          row.unique))
    with Session(engine) as session:
        stored = session.scalars(select(TimelineEvent)).one()
        assert (stored.occurred_at, stored.text, stored.data) == (
            T0, "db failover <@U2> ✓", {"k": [1, "ü"]})
        assert (stored.is_key, stored.thread_ts, stored.slack_ts) == (
            False, None, "1700000000.000100")
        assert stored.occurred_at.tzinfo is not None


def test_a_row_missing_a_defaulted_column_is_refused(engine: Engine) -> None:
    """Column defaults are SQLAlchemy's to compute; the driver-level insert refuses a row
    that leaves one out rather than store NULL."""
    values = dict(ledger("v0=partial").values)
    del values["seen_at"]
    with pytest.raises(ValueError, match="seen_requests"):
        GroupCommit(engine).insert(Row(LEDGER, values, security.LEDGER_KEY))
    assert count(engine, SeenRequest) == 0


def _burst(engine: Engine, writes: GroupCommit, *, threads: int = 8, rows: int = 30) -> int:
    """Threads on one core that each do about 0.2 ms of Python (a request's parsing) before
    every insert, as a server's request threads under a burst; on SQLite, returns how many
    commits stored the rows (traced by SQLite itself)."""
    commits: list[str] = []

    def trace(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(
            lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)

    traced = engine.dialect.name == "sqlite"
    if traced:
        event.listen(engine, "checkout", trace)
    start = threading.Barrier(threads)
    before = count(engine, SeenRequest)

    def post(worker: int) -> None:
        start.wait()
        for i in range(rows):
            deadline = time.perf_counter() + 0.0002
            while time.perf_counter() < deadline:
                pass
            assert writes.insert(ledger(f"v0=burst-{worker}-{i}"))

    workers = [threading.Thread(target=post, args=(w,)) for w in range(threads)]
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})  # this thread's, inherited by the workers: one core
    try:
        for worker in workers:
            worker.start()
    finally:
        os.sched_setaffinity(0, cores)
    for worker in workers:
        worker.join(60)
    if traced:
        event.remove(engine, "checkout", trace)
    assert count(engine, SeenRequest) - before == threads * rows
    return len(commits)


def test_under_a_burst_sqlite_rows_of_concurrent_requests_share_commits(
        sqlite_engine: Engine) -> None:
    """Without the commit delay a leader keeps the interpreter through its SQLite calls and
    mostly commits alone; with it, rows of the threads behind it join its batch."""
    alone = _burst(sqlite_engine, GroupCommit(sqlite_engine, delay_s=0.0))
    with sqlite_engine.begin() as connection:
        connection.execute(SeenRequest.__table__.delete())
    shared = _burst(sqlite_engine, GroupCommit(sqlite_engine))
    assert 240 / shared >= 2.0, (alone, shared)
    assert shared < alone * 0.7, (alone, shared)


def test_the_commit_delay_waits_only_while_commits_are_frequent(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone insert never sleeps; on PostgreSQL (whose commit's round trip gathers rows by
    itself) not even under a burst."""
    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(group_commit.time, "sleep",
                        lambda seconds: (slept.append(seconds), real_sleep(seconds)))
    writes = GroupCommit(engine)
    for i in range(3):
        real_sleep(group_commit.BUSY_GAP_S * 2)
        assert writes.insert(ledger(f"v0=lone-{i}"))
    assert slept == []
    if engine.dialect.name == "postgresql":
        _burst(engine, writes, rows=10)
        assert slept == []


def test_a_lone_caller_inserting_back_to_back_rarely_waits(
        sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its commits are frequent but nobody joins them: after a few fruitless waits the
    delay is skipped, then tried once in a while (each try costs the caller a wait)."""
    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(group_commit.time, "sleep",
                        lambda seconds: (slept.append(seconds), real_sleep(seconds)))
    writes = GroupCommit(sqlite_engine)
    inserts = 260
    started = time.monotonic()
    for i in range(inserts):
        assert writes.insert(ledger(f"v0=sequence-{i}"))
    elapsed = time.monotonic() - started
    assert 0 < len(slept) <= inserts // 20, (len(slept), elapsed)  # 7 with the defaults
    assert count(sqlite_engine, SeenRequest) == inserts
