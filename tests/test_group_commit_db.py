"""GroupCommit against real databases: batched inserts answer each caller as if alone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from incidentbot.core import security, timeline
from incidentbot.group_commit import GroupCommit, Row
from incidentbot.models import Incident, SeenRequest, TimelineEvent

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
LEDGER = SeenRequest.__table__
EVENTS = TimelineEvent.__table__


def ledger(signature: str) -> Row:
    return Row(LEDGER, security.ledger_row(signature, T0), security.LEDGER_KEY)


def message(incident_id: int, ts: str, text: str = "") -> Row:
    return Row(EVENTS, timeline.message_row(
        incident_id, user_id="U1", text=text or f"m {ts}", ts=ts, thread_ts=None,
        occurred_at=T0), timeline.MESSAGE_KEY)


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


def test_a_follower_row_is_stored_only_with_a_new_first_row(engine: Engine) -> None:
    """A message is stored with its request's ledger row; a replayed request stores nothing."""
    incident_id = new_incident(engine)
    writes = GroupCommit(engine)
    assert writes.insert(ledger("v0=first"), then=message(incident_id, "1.1", "original"))
    assert not writes.insert(ledger("v0=first"), then=message(incident_id, "1.2", "replayed"))
    assert writes.insert(ledger("v0=retry"), then=message(incident_id, "1.1", "retried"))
    with engine.connect() as connection:
        texts = connection.scalars(select(TimelineEvent.text)).all()
    assert texts == ["original"]  # the retry of 1.1 did not add a second row
    assert count(engine, SeenRequest) == 2


def test_pairs_in_one_batch_stand_or_fall_together(engine: Engine) -> None:
    """Twelve threads insert ledger+message pairs at once; the pair whose message breaks a
    foreign key fails as a whole (its ledger row too), the other pairs are stored."""
    real = new_incident(engine)
    writes = GroupCommit(engine)
    start = threading.Barrier(12)
    results: dict[int, object] = {}

    def insert(i: int) -> None:
        start.wait()
        incident_id = 999_999 if i == 5 else real
        try:
            results[i] = writes.insert(ledger(f"v0=p{i}"), then=message(incident_id, f"2.{i}"))
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert isinstance(results.pop(5), Exception)
    assert results == {i: True for i in range(12) if i != 5}
    assert count(engine, TimelineEvent) == 11
    with engine.connect() as connection:
        signatures = set(connection.scalars(select(SeenRequest.signature)).all())
    assert signatures == {f"v0=p{i}" for i in range(12) if i != 5}
