"""Update reminders on APScheduler 3, with its SQLAlchemy job store in the bot's database.

One job per open incident (`reminder:<id>`), a date trigger at the incident's
`next_update_due_at`. Jobs are persisted, so they survive a restart; a reminder that fell due
while the bot was down runs once at start (coalesced, no misfire limit). The database stays
the source of truth: at start every open incident's job is re-planned from it.

Several replicas on PostgreSQL: APScheduler 3's job stores are not safe with several
schedulers processing one store, so every replica starts its scheduler *paused* (it can
still add, move and remove jobs in the shared store) and only the leader processes jobs.
The leader holds a PostgreSQL session-level advisory lock on a dedicated connection; when it
dies its connection closes, the lock is released, and another replica takes it within
`LEADER_POLL_S`. A leader that can no longer confirm its lock pauses at once. Posting stays
idempotent underneath: each due reminder is claimed with a unique key before it is posted,
so even two leaders for a moment could not post it twice; the key goes out in the message's
metadata, so the next leader finds a reminder whose leader died before confirming it
(`UpdateService.recover_reminders`) rather than posting it again. On SQLite the one
process leads.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from apscheduler.executors.base import BaseExecutor
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.date import DateTrigger
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

JOB_TABLE = "apscheduler_jobs"
ReminderHandler = Callable[[int], None]
LEADER_LOCK_KEY = 0x1_2C1D_E17B  # the advisory lock that makes a replica the scheduler
LEADER_POLL_S = 1.0
JOB_DEFAULTS = {"coalesce": True, "misfire_grace_time": None, "max_instances": 1}
PUT_CHUNK = 500  # ids per statement, well under SQLite's bound-parameter limit

# Jobs are stored as a reference to `run_scheduled(kind, id)`; it finds the live handler.
_handlers: dict[str, ReminderHandler] = {}


def run_scheduled(kind: str, target_id: int) -> None:
    """Entry point of every persisted job: `kind` names the handler, `target_id` its object."""
    handler = _handlers.get(kind)
    if handler is None:
        log.error("A %s job for %s fired before the bot was ready", kind, target_id)
        return
    handler(target_id)


def job_id(target_id: int, kind: str = "reminder") -> str:
    return f"{kind}:{target_id}"


class ReminderScheduler:
    """Plans, re-plans and cancels the update reminder of each incident."""

    def __init__(self, engine: Engine, *, threads: int = 4,
                 executor: BaseExecutor | None = None) -> None:
        self._engine = engine
        self._kinds: list[str] = []
        self._leadership = Leadership(engine, self)
        self._store = BatchJobStore(engine=engine, tablename=JOB_TABLE)
        self.scheduler = KeepReplannedJobs(
            jobstores={"default": self._store},
            executors={"default": executor or ThreadPoolExecutor(threads)},
            job_defaults=JOB_DEFAULTS, timezone="UTC",
        )

    def start(self, on_leadership: Callable[[], None] | None = None) -> None:
        """Start planning; run jobs once this replica leads, after `on_leadership`."""
        self._leadership.on_leadership = on_leadership
        self.scheduler.start(paused=True)
        self._leadership.start()

    def shutdown(self) -> None:
        self._leadership.stop()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for kind in self._kinds:
            _handlers.pop(kind, None)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    @property
    def is_leader(self) -> bool:
        return self._leadership.is_leader

    def lead(self) -> None:
        """Start processing jobs (this replica became the leader)."""
        self.scheduler.resume()

    def follow(self) -> None:
        """Stop processing jobs (leadership lost); jobs can still be planned."""
        with contextlib.suppress(Exception):
            self.scheduler.pause()

    def wakeup(self) -> None:
        """Look at the store again: another replica may have planned an earlier job."""
        self.scheduler.wakeup()

    def on(self, kind: str, handler: ReminderHandler) -> None:
        """Run `handler(target_id)` when a job of this kind falls due."""
        _handlers[kind] = handler
        self._kinds.append(kind)

    def plan_job(self, kind: str, target_id: int, at: datetime | None) -> None:
        """Schedule (or move) the one job of this kind for this object; None cancels it."""
        if at is None:
            self.cancel(target_id, kind)
            return
        self.plan_many(kind, [(target_id, at)])

    def plan_many(self, kind: str, plans: Iterable[tuple[int, datetime]]) -> int:
        """Schedule (or move) many jobs of one kind in one transaction; how many.

        The jobs are those `Scheduler.add_job` makes. At start, with thousands of incidents
        open, one `add_job` (one transaction) each took about 0.5 ms a job here.
        """
        jobs = [self._date_job(kind, target_id, at) for target_id, at in plans]
        if jobs:
            self._store.put_jobs(jobs)
            if self.scheduler.state == STATE_RUNNING:
                self.scheduler.wakeup()
        return len(jobs)

    def _date_job(self, kind: str, target_id: int, at: datetime) -> Job:
        trigger = DateTrigger(run_date=at, timezone=UTC)
        return Job(self.scheduler, id=job_id(target_id, kind), func=run_scheduled,
                   args=(kind, target_id), kwargs={}, name=f"{kind} {target_id}",
                   trigger=trigger, executor="default",
                   next_run_time=trigger.get_next_fire_time(None, datetime.now(UTC)),
                   **JOB_DEFAULTS)

    def planned(self, kind: str = "reminder") -> dict[int, float]:
        """When each stored job of this kind next runs (epoch seconds), in one query."""
        query = text(f"SELECT id, next_run_time FROM {JOB_TABLE} WHERE id LIKE :prefix")
        with self._engine.connect() as connection:
            rows = connection.execute(query, {"prefix": f"{kind}:%"}).all()
        return {int(job.split(":", 1)[1]): float(at) for job, at in rows if at is not None}

    def plan(self, incident_id: int, due_at: datetime | None) -> None:
        """Schedule (or move) the incident's update reminder; None cancels it."""
        self.plan_job("reminder", incident_id, due_at)

    def cancel(self, incident_id: int, kind: str = "reminder") -> None:
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(job_id(incident_id, kind))

    def every(self, kind: str, minutes: float) -> None:
        """A recurring sweep (one job for all replicas; the leader runs it)."""
        self.scheduler.add_job(
            run_scheduled, "interval", minutes=minutes, args=[kind, 0], id=job_id(0, kind),
            replace_existing=True, name=f"{kind} sweep",
        )

    def plan_page(self, page_id: int, at: datetime | None) -> None:
        """The next escalation step of an unacknowledged page; None cancels it."""
        self.plan_job("page", page_id, at)

    def plan_postmortem(self, incident_id: int, due_at: datetime | None) -> None:
        """The reminder that the postmortem draft is due; None cancels it."""
        self.plan_job("postmortem", incident_id, due_at)

    def due_at(self, incident_id: int) -> datetime | None:
        job = self.scheduler.get_job(job_id(incident_id))
        return job.next_run_time if job else None


class KeepReplannedJobs(BackgroundScheduler):
    """APScheduler's background scheduler without a race that dropped reminders.

    Having handed a due one-off job to an executor, the scheduler removes it from the store.
    A reminder's handler plans the next reminder under the same id; when the handler got
    there first, that removal deleted the new job and the incident had no more reminders.
    Here the scheduler's own removal deletes the job only if it has not been planned again.
    """

    def remove_job(self, job_id: str, jobstore: str | None = None) -> None:
        store = self._jobstores.get(jobstore or "default")
        if threading.current_thread() is getattr(self, "_thread", None) \
                and isinstance(store, BatchJobStore):
            store.remove_if_due(job_id, time.time())
            return
        super().remove_job(job_id, jobstore)


class BatchJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store, which can also store many jobs at once."""

    def remove_if_due(self, job_id: str, now: float) -> None:
        """Remove the job unless it is planned to run after `now` (planned again)."""
        with self.engine.begin() as connection:
            connection.execute(self.jobs_t.delete().where(
                self.jobs_t.c.id == job_id, self.jobs_t.c.next_run_time <= now))

    def put_jobs(self, jobs: Sequence[Job]) -> None:
        """Add these jobs, replacing any stored with the same id, in one transaction."""
        rows = [{"id": job.id, "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                 "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol)}
                for job in jobs]
        with self.engine.begin() as connection:
            for start in range(0, len(rows), PUT_CHUNK):
                chunk = rows[start:start + PUT_CHUNK]
                connection.execute(self.jobs_t.delete().where(
                    self.jobs_t.c.id.in_([row["id"] for row in chunk])))
                connection.execute(self.jobs_t.insert(), chunk)


class Leadership:
    """Which replica processes scheduled jobs: the holder of a PostgreSQL advisory lock
    (always this process on SQLite)."""

    def __init__(self, engine: Engine, scheduler: ReminderScheduler) -> None:
        self._engine = engine
        self.on_leadership: Callable[[], None] | None = None
        self._scheduler = scheduler
        self._connection: Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.is_leader = False

    @property
    def lock_key(self) -> int:
        """One lock per database and schema: replicas sharing a URL share the lock."""
        url = self._engine.url
        scope = f"{url.database}|{url.query.get('options', '')}".encode()
        return LEADER_LOCK_KEY ^ zlib.crc32(scope)

    @property
    def shared(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    def start(self) -> None:
        if self.shared:
            self._tick()
        else:
            self._become_leader()
        self._thread = threading.Thread(target=self._loop, name="scheduler-leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._release()

    def _loop(self) -> None:
        while not self._stop.wait(LEADER_POLL_S):
            self._tick()

    def _tick(self) -> None:
        try:
            if self.is_leader:
                if self.shared:
                    self._confirm()
                self._scheduler.wakeup()
            elif self._try_acquire():
                self._become_leader()
        except SQLAlchemyError as exc:
            log.warning("Scheduler leadership check failed: %s", type(exc).__name__)
            if self.shared:  # on SQLite this process leads whatever happens
                self._lose()

    def _try_acquire(self) -> bool:
        if self._connection is None:
            self._connection = self._engine.connect()
        got = self._connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": self.lock_key}).scalar()
        self._connection.commit()
        return bool(got)

    def _confirm(self) -> None:
        assert self._connection is not None
        self._connection.execute(text("SELECT 1"))
        self._connection.commit()

    def _become_leader(self) -> None:
        self.is_leader = True
        log.info("This replica now runs the scheduler")
        if self.on_leadership is not None:
            try:
                self.on_leadership()
            except Exception:
                log.exception("Taking over the scheduler failed")
        self._scheduler.lead()

    def _lose(self) -> None:
        if self.is_leader:
            log.warning("Scheduler leadership lost; pausing job processing")
        self.is_leader = False
        self._scheduler.follow()
        self._release()

    def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()
                connection.close()
