"""The `jobs` table: add, claim with a lease, finish, retry with backoff, dead-letter.

Every function takes a session and commits nothing: the caller's transaction decides. A job
is claimed for `lease` at a time; a replica that dies holding claims loses them when the
lease runs out, and another replica takes the jobs over. On PostgreSQL the candidates are
read `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other's claims.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from incidentbot.db import insert_ignore
from incidentbot.models import Job

PENDING, DONE, FAILED = "pending", "done", "failed"
MAX_ATTEMPTS = 5
BACKOFF_FACTOR = 4  # each retry waits 4 times longer: 1, 4, 16, 64 s with a 1 s base
KEEP_DONE = timedelta(hours=1)
RECENT_FAILURES = timedelta(days=1)  # failed jobs that make the bot "degraded"
FIRST, LATER = 0, 1  # priorities: work a person is waiting on (a trigger_id) goes first


@dataclass(frozen=True)
class NewJob:
    function: str
    body: str
    content_type: str
    mode: str
    priority: int = LATER

    @property
    def dedupe_key(self) -> str:
        """The same request and function never make a second job."""
        digest = hashlib.sha256(self.body.encode()).hexdigest()[:64]
        return f"{digest}:{self.function}"[:120]


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    function: str
    body: str
    content_type: str
    mode: str
    attempts: int
    received_at: datetime


@dataclass(frozen=True)
class QueueStats:
    pending: int
    failed: int
    oldest_pending_s: float


def add(session: Session, job: NewJob, now: datetime) -> bool:
    """Add a job; False when the same request already made it."""
    return insert_ignore(session, Job.__table__, {
        "dedupe_key": job.dedupe_key, "function": job.function[:100], "body": job.body,
        "content_type": job.content_type[:100], "mode": job.mode, "priority": job.priority,
        "state": PENDING, "attempts": 0, "received_at": now, "run_after": now,
    }, ("dedupe_key",))


def claim(session: Session, runner: str, now: datetime, lease: timedelta) -> ClaimedJob | None:
    """Take the most urgent ready job (never claimed, or its lease ran out), if any."""
    candidate = (
        select(Job.id)
        .where(Job.state == PENDING, Job.run_after <= now,
               (Job.lease_until.is_(None)) | (Job.lease_until < now))
        .order_by(Job.priority, Job.id).limit(1).with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = session.execute(
        update(Job).where(Job.id == candidate, Job.state == PENDING)
        .values(lease_until=now + lease, claimed_by=runner[:100], attempts=Job.attempts + 1)
        .returning(Job.id, Job.function, Job.body, Job.content_type, Job.mode, Job.attempts,
                   Job.received_at)
        .execution_options(synchronize_session=False)
    ).first()
    return ClaimedJob(*row) if row is not None else None


def finish(session: Session, job_id: int, now: datetime) -> None:
    session.execute(update(Job).where(Job.id == job_id)
                    .values(state=DONE, finished_at=now, lease_until=None, error=None))


def fail(session: Session, job: ClaimedJob, error: str, now: datetime,
         retry_base_s: float) -> bool:
    """Record a failed attempt: retry after a backoff, or dead-letter it after the last
    attempt. True when the job is now dead (`failed`)."""
    dead = job.attempts >= MAX_ATTEMPTS
    values: dict[str, object] = {"error": error[:2000], "lease_until": None}
    if dead:
        values.update(state=FAILED, finished_at=now)
    else:
        pause = retry_base_s * BACKOFF_FACTOR ** (job.attempts - 1)
        values["run_after"] = now + timedelta(seconds=pause)
    session.execute(update(Job).where(Job.id == job.id).values(**values))
    return dead


def release_claims(session: Session) -> int:
    """Forget every claim (SQLite at start: this process is the only runner, so whatever
    is claimed was claimed by a run that died)."""
    return session.execute(update(Job).where(Job.state == PENDING, Job.lease_until.is_not(None))
                           .values(lease_until=None)).rowcount


def retry(session: Session, job_id: int, now: datetime) -> bool:
    """Give a dead job another set of attempts (an admin fixed what made it fail)."""
    return session.execute(update(Job).where(Job.id == job_id, Job.state == FAILED).values(
        state=PENDING, attempts=0, run_after=now, finished_at=None)).rowcount == 1


def stats(session: Session, now: datetime) -> QueueStats:
    """Pending jobs and the age of the oldest; jobs that failed in the last day."""
    pending, oldest = session.execute(
        select(func.count(), func.min(Job.received_at)).where(Job.state == PENDING)).one()
    failed = session.scalar(select(func.count()).where(
        Job.state == FAILED, Job.finished_at > now - RECENT_FAILURES)) or 0
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    return QueueStats(pending=pending, failed=failed, oldest_pending_s=max(age, 0.0))


def failed_jobs(session: Session, limit: int = 20) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.state == FAILED)
                                .order_by(Job.id.desc()).limit(limit)))


def forget_done(session: Session, now: datetime) -> int:
    """Delete finished jobs older than `KEEP_DONE` (failed ones stay until retried)."""
    return session.execute(Job.__table__.delete().where(
        Job.state == DONE, Job.finished_at < now - KEEP_DONE)).rowcount


class JobAdmin:
    """What an admin sees of the queue and can do about it."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self._sessions = sessions
        self._clock = clock

    def overview(self) -> tuple[list[Job], QueueStats]:
        with self._sessions() as session:
            return failed_jobs(session), stats(session, self._clock())

    def retry(self, job_id: int) -> bool:
        with self._sessions.begin() as session:
            return retry(session, job_id, self._clock())
