"""The inbox: acknowledged requests whose work is still to do, kept in the database.

On SQLite it is a database file of its own beside the bot's (`<name>-inbox.db`, the same
schema, of which only the `inbox` table is used; see `InboxStore`): SQLite admits one writer
per file, and an answer to Slack waiting to store its request must not queue behind the
worker's writes of a declaration (an incident, its roles, timeline and reminders). On
PostgreSQL, which locks rows, it is a table of the bot's database.

The serving process stores a request here before Slack gets its answer (one insert, through
`GroupCommit`, which is also that request's replay check; on SQLite, with a worker process,
one append to a spool file instead, which the worker moves here: `incidentbot.spool`); a
worker claims it, replays it and marks it done. A serving process with a single worker
stores each job already claimed by it (`assigned`; the worker moves spooled records in
claimed by itself), so that worker takes its jobs without claiming them. A crash after the answer
loses nothing: an unfinished claim lapses after `LEASE` and another worker takes the job
again (the workflows are idempotent on the request's key). A job that failed `MAX_ATTEMPTS`
times is left for a person to look at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from incidentbot.db import (
    create_db_engine,
    migrate,
    normalize_url,
    session_factory,
    sqlite_file,
    transaction,
)
from incidentbot.group_commit import GroupCommit
from incidentbot.models import InboxJob

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
MAX_ATTEMPTS = 3
KEEP_DONE = timedelta(minutes=10)  # as long as the replay window (`security.REPLAY_WINDOW`)
INBOX_KEY = ("signature",)
INBOX_TABLE = InboxJob.__table__
MOVED = tuple(column.name for column in INBOX_TABLE.c if column.name != "id")  # `take_over`


@dataclass(frozen=True)
class Job:
    """One claimed request: its raw body as Slack sent it, and how many tries it has had."""

    id: int
    body: str
    content_type: str
    attempts: int


def job_row(signature: str, body: str, content_type: str, now: datetime,
            worker: str | None = None) -> dict[str, Any]:
    """The inbox row of a request (unique on INBOX_KEY), for a batched insert; claimed by
    `worker` from the start when given."""
    return {"signature": signature[:100], "body": body, "content_type": content_type[:100],
            "received_at": now, "claimed_at": now if worker else None,
            "claimed_by": worker[:100] if worker else None, "attempts": 1 if worker else 0}


def assigned(session: Session, worker: str, after_id: int, limit: int) -> list[Job]:
    """Up to `limit` unfinished jobs stored claimed by `worker` with ids above `after_id`,
    oldest first. A read: ids grow in commit order, so a worker that remembers the last id
    it took never takes one twice."""
    rows = session.execute(
        select(InboxJob.id, InboxJob.body, InboxJob.content_type, InboxJob.attempts)
        .where(InboxJob.done_at.is_(None), InboxJob.claimed_by == worker[:100],
               InboxJob.id > after_id)
        .order_by(InboxJob.id).limit(limit)
    ).all()
    return [Job(*row) for row in rows]


def _claimable(now: datetime) -> Any:
    return (InboxJob.done_at.is_(None), InboxJob.attempts < MAX_ATTEMPTS,
            or_(InboxJob.claimed_at.is_(None), InboxJob.claimed_at < now - LEASE))


def any_claimable(session: Session, now: datetime) -> bool:
    """Whether `claim` would find a job (a read, so an idle worker writes nothing)."""
    return session.execute(select(InboxJob.id).where(*_claimable(now)).limit(1)).first() \
        is not None


def claim(session: Session, worker: str, now: datetime, limit: int) -> list[Job]:
    """Take up to `limit` jobs, oldest first: never claimed, or whose claim has lapsed.

    One `UPDATE … RETURNING`, so two workers never take the same job (on PostgreSQL the
    candidates are read `FOR UPDATE SKIP LOCKED`, so workers do not queue on each other).
    """
    candidates = (
        select(InboxJob.id)
        .where(*_claimable(now))
        .order_by(InboxJob.id).limit(limit).with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(InboxJob).where(InboxJob.id.in_(candidates))
        .values(claimed_at=now, claimed_by=worker[:100], attempts=InboxJob.attempts + 1)
        .returning(InboxJob.id, InboxJob.body, InboxJob.content_type, InboxJob.attempts)
        .execution_options(synchronize_session=False)
    ).all()
    return sorted((Job(*row) for row in rows), key=lambda job: job.id)


def claimers(session: Session) -> list[str]:
    """Who holds claims on unfinished jobs."""
    return list(session.scalars(select(InboxJob.claimed_by).distinct().where(
        InboxJob.done_at.is_(None), InboxJob.claimed_by.is_not(None))))


def release(session: Session, claimer: str) -> int:
    """Give back the unfinished claims of a worker known to be dead (no lease to wait out)."""
    result = session.execute(
        update(InboxJob).where(InboxJob.done_at.is_(None), InboxJob.claimed_by == claimer)
        .values(claimed_at=None, claimed_by=None).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def finish(session: Session, job_ids: list[int], now: datetime) -> None:
    if job_ids:
        session.execute(update(InboxJob).where(InboxJob.id.in_(job_ids)).values(done_at=now)
                        .execution_options(synchronize_session=False))


def prune(session: Session, now: datetime) -> int:
    """Forget jobs done (or given up) longer ago than the replay window."""
    result = session.execute(delete(InboxJob).where(
        InboxJob.received_at < now - KEEP_DONE,
        or_(InboxJob.done_at.is_not(None), InboxJob.attempts >= MAX_ATTEMPTS)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def own_file_url(database_url: str) -> str | None:
    """The inbox's own SQLite file beside an SQLite database file (`x.db` -> `x-inbox.db`);
    None for PostgreSQL and in-memory SQLite, where the inbox is a table of the database."""
    database = sqlite_file(database_url)
    if database is None:
        return None
    path = Path(database)
    return make_url(normalize_url(database_url)).set(
        database=str(path.with_name(f"{path.stem}-inbox{path.suffix}"))
    ).render_as_string(hide_password=False)


@dataclass
class InboxStore:
    """Where the inbox is kept: its engine, sessions and batched inserts (the bot's own
    when the inbox is a table of the bot's database)."""

    engine: Engine
    sessions: sessionmaker[Session]
    writes: GroupCommit
    own_file: bool = False

    @classmethod
    def open(cls, database_url: str, engine: Engine, writes: GroupCommit, *,
             checkpoints: bool = True) -> InboxStore:
        """The bot's inbox; on SQLite its own file, created (migrated) if need be, taking
        over any rows an earlier version kept in the bot's database (`checkpoints`: see
        `create_db_engine`)."""
        url = own_file_url(database_url)
        if url is None:
            return cls(engine, session_factory(engine), writes)
        own = create_db_engine(url, checkpoints=checkpoints)
        migrate(own)
        store = cls(own, session_factory(own), GroupCommit(own), own_file=True)
        store.take_over(session_factory(engine))
        return store

    def take_over(self, database: sessionmaker[Session]) -> int:
        """Move the inbox rows of the bot's database here (kept there before the inbox had a
        file of its own). Safe to repeat: a row already here (same signature) is skipped."""
        with transaction(database) as session:
            rows = [{column: getattr(job, column) for column in MOVED}
                    for job in session.scalars(select(InboxJob).order_by(InboxJob.id))]
        if not rows:
            return 0
        with transaction(self.sessions) as session:
            for row in rows:
                session.execute(insert(InboxJob).values(row).prefix_with("OR IGNORE"))
        with transaction(database) as session:
            session.execute(delete(InboxJob).where(InboxJob.signature.in_(
                [row["signature"] for row in rows])))
        log.warning("Moved %d inbox row(s) into the inbox's own file", len(rows))
        return len(rows)

    def close(self) -> None:
        if self.own_file:
            self.writes.close()
            self.engine.dispose()

