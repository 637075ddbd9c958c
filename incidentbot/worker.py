"""The inbox worker: claims acknowledged requests and runs the work that follows each.

It runs in a worker process (`WORKER_PROCESSES`, the default) or, with none, as a thread of
the serving process. The serving process sets `wake` after storing a job; the worker also
looks every `POLL_S`, for jobs whose claim lapsed or that another replica stored.

A worker process does not claim or mark jobs in the inbox: a serving process with one worker
stores its jobs already claimed by it (`inbox.assigned`; on SQLite it spools them and the
worker moves them into the inbox, `incidentbot.spool`), and the worker hands the ids of
finished jobs to its serving process (`DonePipe`) at most every `MARK_DONE_EVERY_S`, which
marks them done and prunes the inbox (`DoneMarker`). When answers to Slack were inserts into
the inbox, every write of the worker process was a write the next answer could queue behind
(one writer at a time per SQLite file), and the CPU serves the worker after the serving
process: a worker that marked its jobs done itself held that turn for milliseconds while
declarations came in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from incidentbot import inbox
from incidentbot.ack_priority import AckPriority
from incidentbot.db import transaction
from incidentbot.inbox import Job
from incidentbot.models import utcnow

log = logging.getLogger(__name__)

POLL_S = 1.0
MARK_DONE_EVERY_S = 1.0  # a worker marks (or reports) the jobs it finished
FRONT_MARK_EVERY_S = 10.0  # a serving process marks the jobs its worker processes reported
QUEUED_PER_THREAD = 2  # claimed ahead, so that a thread never waits for a claim
PRUNE_EVERY_S = 60.0


class Wake(Protocol):
    """`threading.Event` or `multiprocessing.Event`."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class PipeWake:
    """A wake-up across processes that a killed process cannot jam (a `multiprocessing.Event`
    can: its lock dies with a holder killed mid-call): a byte down a non-blocking pipe."""

    def __init__(self, context: Any) -> None:
        self._reader, self._writer = context.Pipe(duplex=False)
        os.set_blocking(self._writer.fileno(), False)

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is already waiting
            self._writer.send_bytes(b"!")

    def clear(self) -> None:
        while self._reader.poll(0):
            self._reader.recv_bytes()

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._reader.poll(timeout))


class DonePipe:
    """Ids of the jobs worker processes finished, on their way to the serving process.

    Each message is at most `CHUNK` ids, one write of at most `PIPE_BUF` bytes, which the
    kernel keeps whole when several worker processes write at once."""

    CHUNK = 500  # 8-byte ids: 4,000 bytes and a 4-byte header, under PIPE_BUF (4,096)

    def __init__(self, context: Any) -> None:
        self._reader, self._writer = context.Pipe(duplex=False)

    def send(self, job_ids: list[int]) -> None:
        for start in range(0, len(job_ids), self.CHUNK):
            self._writer.send_bytes(array("q", job_ids[start:start + self.CHUNK]).tobytes())

    def receive(self, timeout: float | None) -> list[int]:
        """The ids sent so far, waiting up to `timeout` for some ([] if none came)."""
        ids = array("q")
        if self._reader.poll(timeout):
            while self._reader.poll(0):
                ids.frombytes(self._reader.recv_bytes())
        return ids.tolist()


def worker_name(server_pid: int | None = None, index: int | None = None) -> str:
    """`host:pid` of the serving process, and `/index` for its worker process `index`: the
    name under which a worker claims jobs (its host and pid tell whether it still runs)."""
    name = f"{socket.gethostname()}:{server_pid or os.getpid()}"
    return name if index is None else f"{name}/{index}"


class InboxWorker:
    """Up to `threads` jobs at a time, each run by `run(job)` and then marked done."""

    def __init__(self, sessions: sessionmaker[Session], run: Callable[[Job], None], wake: Wake,
                 *, threads: int, clock: Callable[[], datetime] = utcnow,
                 initializer: Callable[[], None] | None = None,
                 name: str | None = None,
                 report_done: Callable[[list[int]], None] | None = None,
                 intake: Callable[[Session], bool] | None = None) -> None:
        """`report_done`: where the ids of finished jobs go (`DonePipe.send` in a worker
        process, whose serving process marks them done and prunes); None: the worker marks
        them done in the inbox and prunes it itself. `intake`: brings jobs into the inbox
        (claimed by this worker) in the transaction that takes them, True if it stopped at
        its limit (`SpoolReader.intake`)."""
        self._sessions = sessions
        self._intake = intake
        self._report_done = report_done
        self._run = run
        self._wake = wake
        self._threads = threads
        self._clock = clock
        self._initializer = initializer
        self._pool: ThreadPoolExecutor | None = None
        self._busy = 0
        self._finished: list[int] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_prune = 0.0
        self._next_mark = 0.0
        self._last_assigned: int | None = None  # id of the last assigned job taken
        self._more_spooled = False  # the last intake stopped at its limit: look again at once
        self._next_claimable_look = 0.0
        self.name = name or worker_name()

    def start(self) -> None:
        self._release_dead_claims(own=self._last_assigned is None)
        self._last_assigned = self._last_assigned or 0
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="work",
                                        initializer=self._initializer)
        self._thread = threading.Thread(target=self._loop, name="inbox", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming, then finish the jobs already claimed (it can be started again)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._claim(0)  # mark the jobs finished meanwhile done

    def _loop(self) -> None:
        assert self._pool is not None
        while not self._stopping.is_set():
            self._wake.clear()
            with self._lock:
                free = self._threads * QUEUED_PER_THREAD - self._busy
            jobs = self._claim(free)
            for job in jobs:
                with self._lock:
                    self._busy += 1
                self._pool.submit(self._run_one, job)
            if (len(jobs) < free or free <= 0) and not self._more_spooled:
                self._wake.wait(POLL_S)
            self._prune_now_and_then()

    def _release_dead_claims(self, *, own: bool) -> None:
        """Claims held by a worker of this host that is no longer running (killed with the
        server it ran beside, say) are given back now rather than after their lease; with
        `own`, so are those under this worker's name (left by the process it replaces)."""
        try:
            with transaction(self._sessions) as session:
                for claimer in inbox.claimers(session):
                    if (own and claimer == self.name) or _gone(claimer):
                        released = inbox.release(session, claimer)
                        log.warning("Took back %d job(s) from worker %s, which is gone",
                                    released, claimer)
        except SQLAlchemyError as exc:
            log.warning("Could not look for dead workers' claims: %s", type(exc).__name__)

    def _claim(self, limit: int) -> list[Job]:
        """Mark the jobs finished so far done (every `MARK_DONE_EVERY_S`, or when stopping:
        `limit` 0), then take up to `limit` more: those assigned to this worker, then any
        other claimable (a job run but not yet marked when the process dies runs again)."""
        self._more_spooled = False
        marking = limit <= 0 or time.monotonic() >= self._next_mark
        with self._lock:
            finished, self._finished = (self._finished, []) if marking else ([], self._finished)
        if finished and self._report_done is not None:
            self._next_mark = time.monotonic() + MARK_DONE_EVERY_S
            try:
                self._report_done(finished)
            except OSError as exc:  # the serving process is gone: they will run again
                log.warning("Could not report %d finished job(s): %s", len(finished), exc)
            finished = []
        if not finished and limit <= 0 and self._intake is None:
            return []
        try:
            with transaction(self._sessions) as session:
                if finished:
                    inbox.finish(session, finished, self._clock())
                    self._next_mark = time.monotonic() + MARK_DONE_EVERY_S
                assigned, claimed = self._take(session, limit)
        except SQLAlchemyError as exc:
            with self._lock:
                self._finished = finished + self._finished
            log.warning("Inbox unreachable (%s); trying again in %.0f s",
                        type(exc).__name__, POLL_S)
            self._stopping.wait(POLL_S)
            return []
        if assigned:
            self._last_assigned = assigned[-1].id
        return assigned + claimed

    def _take(self, session: Session, limit: int) -> tuple[list[Job], list[Job]]:
        """(jobs assigned to this worker, other jobs claimed), up to `limit` in all. The
        intake runs whatever the limit: the rows it brings in are waited on by no thread."""
        if self._intake is not None:
            self._more_spooled = self._intake(session)
        if limit <= 0:
            return [], []
        assigned = inbox.assigned(session, self.name, self._last_assigned or 0, limit)
        now = self._clock()
        if len(assigned) == limit or not self._look_for_claimable() \
                or not inbox.any_claimable(session, now):
            return assigned, []
        return assigned, inbox.claim(session, self.name, now, limit - len(assigned))

    def _look_for_claimable(self) -> bool:
        """Whether to look for jobs to claim now: at every take, except for a worker whose
        jobs come through its intake (each already claimed by it), which looks every
        `POLL_S` for the jobs of a worker that died (their claims given back at start, or
        lapsed after their lease of minutes)."""
        if self._intake is None:
            return True
        now = time.monotonic()
        if now < self._next_claimable_look:
            return False
        self._next_claimable_look = now + POLL_S
        return True

    def _run_one(self, job: Job) -> None:
        try:
            self._run(job)
        except Exception:
            log.exception("Inbox job %s failed (attempt %d)", job.id, job.attempts)
        finally:
            with self._lock:
                self._busy -= 1
                self._finished.append(job.id)
            self._wake.set()

    def _prune_now_and_then(self) -> None:
        if self._report_done is None and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            prune_inbox(self._sessions, self._clock)


class DoneMarker:
    """In a serving process: marks done the jobs its worker processes finished (as they
    report them through `DonePipe`) every `every_s`, and prunes the inbox every
    `PRUNE_EVERY_S`, in a thread. Each write waits for a moment when no request is being
    answered (`priority`), then goes behind any answer waiting to store its request
    (`WriterTurns`); still, a request arriving during a mark waits for it, so marks are
    few (a crash re-runs the jobs finished since the last mark, idempotent on the request).
    """

    def __init__(self, sessions: sessionmaker[Session], receive: Callable[[float], list[int]],
                 *, clock: Callable[[], datetime] = utcnow,
                 priority: AckPriority | None = None,
                 every_s: float = FRONT_MARK_EVERY_S) -> None:
        self._sessions = sessions
        self._every_s = every_s
        self._receive = receive
        self._clock = clock
        self._priority = priority or AckPriority()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="done-marks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Mark what was reported until now (call it after the worker processes stopped)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        self._priority.mark_background()
        pending: list[int] = []
        next_mark, next_prune = time.monotonic() + self._every_s, 0.0
        while not self._stopping.is_set():
            pending += self._receive(max(0.0, min(next_mark - time.monotonic(), POLL_S)))
            if time.monotonic() >= next_mark:
                pending = self._mark(pending)
                next_mark = time.monotonic() + self._every_s
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_S
                self._priority.step_aside()
                prune_inbox(self._sessions, self._clock)
        self._mark(pending + self._receive(0))

    def _mark(self, job_ids: list[int]) -> list[int]:
        """Mark `job_ids` done; those it could not mark, to try again."""
        if not job_ids:
            return []
        self._priority.step_aside()
        try:
            with transaction(self._sessions) as session:
                inbox.finish(session, job_ids, self._clock())
        except SQLAlchemyError as exc:
            log.warning("Could not mark %d inbox job(s) done (%s); trying again",
                        len(job_ids), type(exc).__name__)
            return job_ids
        return []


def prune_inbox(sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
    try:
        with transaction(sessions) as session:
            inbox.prune(session, clock())
    except SQLAlchemyError as exc:
        log.warning("Inbox not pruned: %s", type(exc).__name__)


def _gone(claimer: str) -> bool:
    """A worker of this host (`worker_name`) whose serving process no longer runs."""
    host, _, rest = claimer.partition(":")
    pid = rest.split("/")[0]
    return host == socket.gethostname() and pid.isdigit() and not _running(int(pid))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
