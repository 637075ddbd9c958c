"""GroupCommit against real databases: batched inserts answer each caller as if alone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from incidentbot.core import security, timeline
from incidentbot.group_commit import GroupCommit
from incidentbot.models import Incident, SeenRequest, TimelineEvent

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
LEDGER = SeenRequest.__table__
EVENTS = TimelineEvent.__table__


def count(engine: Engine, model: type) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(model)) or 0)


def test_a_key_is_new_once_whoever_inserts_it(engine: Engine) -> None:
    writes = GroupCommit(engine)
    assert writes.insert(LEDGER, security.ledger_row("v0=a", T0), security.LEDGER_KEY)
    assert not writes.insert(LEDGER, security.ledger_row("v0=a", T0), security.LEDGER_KEY)
    assert count(engine, SeenRequest) == 1


def test_equal_keys_in_one_batch_make_one_row_and_one_winner(engine: Engine) -> None:
    """Forty threads insert ten keys four times each, all at once: ten rows, ten winners."""
    writes = GroupCommit(engine)
    start = threading.Barrier(40)
    winners: list[str] = []
    lock = threading.Lock()

    def insert(key: str) -> None:
        start.wait()
        if writes.insert(LEDGER, security.ledger_row(key, T0), security.LEDGER_KEY):
            with lock:
                winners.append(key)

    threads = [threading.Thread(target=insert, args=(f"v0=k{i % 10}",)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(winners) == sorted(f"v0=k{i}" for i in range(10))
    assert count(engine, SeenRequest) == 10


def test_concurrent_messages_of_two_tables_are_all_stored(engine: Engine) -> None:
    with engine.begin() as connection:
        incident_id = connection.execute(Incident.__table__.insert().values(
            title="t", severity="SEV2", status="investigating", declared_by="U1",
            declared_at=T0, channel_id="C1", channel_name="inc-1",
        ).returning(Incident.__table__.c.id)).scalar_one()
    writes = GroupCommit(engine)

    def post(worker: int) -> None:
        for i in range(25):
            ts = f"1700000000.{worker:03d}{i:03d}"
            writes.insert(LEDGER, security.ledger_row(f"v0={ts}", T0), security.LEDGER_KEY)
            assert writes.insert(EVENTS, timeline.message_row(
                incident_id, user_id="U1", text=f"m {ts}", ts=ts, thread_ts=None,
                occurred_at=T0), timeline.MESSAGE_KEY)

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
            results[name] = writes.insert(EVENTS, timeline.message_row(
                incident_id, user_id="U1", text=name, ts=f"1.{name}", thread_ts=None,
                occurred_at=T0), timeline.MESSAGE_KEY)
        except Exception as exc:
            results[name] = exc

    with engine.begin() as connection:
        real = connection.execute(Incident.__table__.insert().values(
            title="t", severity="SEV2", status="investigating", declared_by="U1",
            declared_at=T0, channel_id="C1", channel_name="inc-1",
        ).returning(Incident.__table__.c.id)).scalar_one()
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
        writes.insert(LEDGER, security.ledger_row("v0=x", T0), security.LEDGER_KEY)
