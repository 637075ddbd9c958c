"""Databases for the bench (fresh SQLite file or PostgreSQL schema) and direct seeding."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from incidentbot.db import create_db_engine, migrate, normalize_url
from incidentbot.models import Incident, RoleAssignment, TimelineEvent, utcnow

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path, pg_url: str = PG_URL) -> Iterator[str]:
    """A migrated, empty database: a new SQLite file or a new PostgreSQL schema (dropped)."""
    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
        _migrate(url)
        try:
            yield url
        finally:
            inbox = path.with_name(f"{path.stem}-inbox{path.suffix}")  # inbox.own_file_url
            for file in (path, inbox):
                for suffix in ("", "-wal", "-shm", ".writers"):
                    Path(f"{file}{suffix}").unlink(missing_ok=True)
        return
    admin = create_engine(normalize_url(pg_url), isolation_level="AUTOCOMMIT")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(normalize_url(pg_url)).update_query_dict(
        {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    try:
        _migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _migrate(url: str) -> None:
    engine = create_db_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def engine_for(url: str) -> Iterator[Engine]:
    engine = create_db_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def seed_incidents(url: str, channels: Sequence[dict[str, str]], *, ic: str,
                   due_at: Sequence[datetime | None], severity: str = "SEV2",
                   interval: timedelta = timedelta(minutes=30)) -> list[int]:
    """Open incidents on these fake channels (with their cards), IC `ic`, one per channel.

    Each was declared two days ago and last touched then (so the start-up card refresh,
    which looks at the last 24 h, leaves them alone); its last update was one interval
    before its reminder is due (so a due reminder posts without escalating).
    """
    now = utcnow()
    old = now - timedelta(days=2)
    with engine_for(url) as engine, Session(engine) as session:
        first = (session.scalar(select(func.max(Incident.id))) or 0) + 1
        ids = list(range(first, first + len(channels)))
        rows = [{
            "id": incident_id, "title": f"Bench incident {incident_id}", "severity": severity,
            "status": "investigating", "channel_id": channel["id"],
            "channel_name": f"inc-bench-{incident_id}", "card_ts": channel["card_ts"],
            "declared_by": ic, "declared_at": old, "acknowledged_at": old,
            "next_update_due_at": due, "last_update_at": (due - interval) if due else None,
            "updated_at": old, "team_id": "T0TEST",
        } for incident_id, channel, due in zip(ids, channels, due_at, strict=True)]
        for chunk in range(0, len(rows), 2000):
            session.execute(insert(Incident), rows[chunk:chunk + 2000])
        roles = [{"incident_id": i, "role": "ic", "user_id": ic, "assigned_by": ic,
                  "assigned_at": old} for i in ids]
        for chunk in range(0, len(roles), 2000):
            session.execute(insert(RoleAssignment), roles[chunk:chunk + 2000])
        session.commit()
    return ids


def set_due(url: str, due_at: dict[int, datetime], interval: timedelta) -> None:
    """Move incidents' reminder clocks (last update one interval before)."""
    rows = [{"id": incident_id, "next_update_due_at": due, "last_update_at": due - interval}
            for incident_id, due in due_at.items()]
    with engine_for(url) as engine, Session(engine) as session:
        session.execute(update(Incident), rows)
        session.commit()


def count_messages(url: str, incident_ids: Sequence[int]) -> int:
    with engine_for(url) as engine, Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(TimelineEvent).where(
            TimelineEvent.kind == "message",
            TimelineEvent.incident_id.in_(list(incident_ids)))) or 0)


def count_jobs(url: str, prefix: str = "reminder:") -> int:
    with engine_for(url) as engine, engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM apscheduler_jobs WHERE id LIKE :p"),
                                {"p": prefix + "%"}).scalar() or 0)


def seed_timeline(url: str, incident_id: int, events: int, *, user: str) -> None:
    """A resolved incident's busy timeline: `events` rows over 6 hours, as a channel makes them.

    Mostly messages from a handful of people (some in threads, every 50th a key event, every
    40th edited, every 97th deleted) with a status or severity change every 500 rows.
    """
    started = utcnow() - timedelta(hours=7)
    step = timedelta(hours=6) / max(events, 1)
    people = [user, "UBENCH2", "UBENCH3", "UBENCH4", "UBENCH5"]
    statuses = ["identified", "mitigated", "investigating"]
    rows = []
    for i in range(events):
        at = started + step * i
        ts = f"{int(at.timestamp())}.{i:06d}"
        row = {"incident_id": incident_id, "occurred_at": at, "actor_id": people[i % 5],
               "kind": "message", "text": f"checked shard {i % 37}: <@{people[(i + 1) % 5]}> "
                                          f"latency p99 {100 + i % 900} ms, see thread",
               "slack_ts": ts, "thread_ts": None, "is_key": i % 50 == 0,
               "edited_at": at + timedelta(seconds=30) if i % 40 == 0 else None,
               "deleted_at": at + timedelta(seconds=60) if i % 97 == 0 else None,
               "dedupe_key": f"msg:{ts}", "data": {}}
        if i % 7 == 3:
            row["thread_ts"] = rows[-1]["slack_ts"]
        if i % 500 == 250:
            row.update(kind="status_changed", text=f"Status → {statuses[i // 500 % 3]}",
                       slack_ts=None, dedupe_key=None, is_key=True)
        rows.append(row)
    with engine_for(url) as engine, Session(engine) as session:
        for chunk in range(0, len(rows), 2000):
            session.execute(insert(TimelineEvent), rows[chunk:chunk + 2000])
        session.execute(update(Incident).where(Incident.id == incident_id).values(
            status="resolved", declared_at=started, acknowledged_at=started,
            identified_at=started + timedelta(hours=1), mitigated_at=started + timedelta(hours=4),
            resolved_at=started + timedelta(hours=6), next_update_due_at=None))
        session.commit()
