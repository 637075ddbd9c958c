"""Bolt's lazy listeners, made durable: the work after an ack is a row of `jobs`.

Bolt runs a listener's `ack` function, then hands each of its `lazy` functions to the app's
lazy listener runner. `DurableLazyRunner.start` commits the request (its raw body and the
lazy function's name) as a job before the answer goes out (`process_before_response=True`),
so an acknowledged request survives a crash. `JobRunner` claims jobs and runs each through
`App.dispatch` in lazy-only mode (the headers Bolt's AWS Lambda adapter uses), so only the
lazy function runs, never the ack again. A job that raises is retried with a backoff, then
kept as failed; every other job goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from slack_bolt import App, BoltRequest
from slack_bolt.kwargs_injection import build_required_kwargs
from slack_bolt.lazy_listener import LazyListenerRunner
from slack_bolt.lazy_listener.internals import build_runnable_function
from slack_bolt.util.utils import get_arg_names_of_callable, get_name_for_callable
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from incidentbot.db import transaction
from incidentbot.jobs import queue
from incidentbot.jobs.queue import ClaimedJob, NewJob
from incidentbot.slack.intake import bolt_request
from incidentbot.telemetry import Telemetry

log = logging.getLogger(__name__)

NO_WORK = "no_work"  # set in the context by an ack that refused the request
RECEIVED_AT = "received_at"  # when Slack's request arrived (unix time), in a job's context
JOB_ERROR = "job_error"
LAST_ATTEMPT = "last_attempt"  # in a job's context: no retry follows a failure
POLL_S = 1.0  # how often to look for jobs of other replicas and retries due
PRUNE_EVERY_S = 600.0  # how often finished jobs past `queue.KEEP_DONE` are deleted
URGENT = "holds_trigger"  # attribute of lazy functions a person waits on (a modal to open)


def urgent(function: Callable[..., None]) -> Callable[..., None]:
    """Mark a lazy function that spends a `trigger_id`: its jobs run before the others."""
    setattr(function, URGENT, True)
    return function


class DurableLazyRunner(LazyListenerRunner):
    """Commits each lazy function's request as a job; `run` executes it for `JobRunner`."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime],
                 wake: Callable[[], None], fallback: Executor) -> None:
        self.logger = log
        self._sessions = sessions
        self._clock = clock
        self._wake = wake
        self._fallback = fallback

    def start(self, function: Callable[..., None], request: BoltRequest) -> None:
        if request.context.get(NO_WORK):
            return
        job = NewJob(
            function=get_name_for_callable(function),
            body=request.raw_body if request.mode == "http" else json.dumps(request.body),
            content_type=(request.headers.get("content-type") or ["application/json"])[0],
            mode=request.mode,
            priority=queue.FIRST if getattr(function, URGENT, False) else queue.LATER,
        )
        try:
            with transaction(self._sessions) as session:
                added = queue.add(session, job, self._clock())
        except SQLAlchemyError as exc:
            log.warning("Job store unavailable (%s); running %s in memory", type(exc).__name__,
                        job.function)
            request.context[RECEIVED_AT] = self._clock().timestamp()
            self._fallback.submit(build_runnable_function(function, log, request))
            return
        if added:
            self._wake()

    def run(self, function: Callable[..., None], request: BoltRequest) -> None:
        """Run a job's lazy function; what it raises is kept for `JobRunner` to record."""
        try:
            function(**build_required_kwargs(
                logger=log, required_arg_names=get_arg_names_of_callable(function), request=request,
                response=None, this_func=function))
        except Exception as exc:
            request.context[JOB_ERROR] = exc


def stored_request(job: ClaimedJob) -> BoltRequest:
    """The Bolt request of a job, asking Bolt to run only its lazy function."""
    headers = {"content-type": job.content_type, "x-slack-bolt-lazy-only": "1",
               "x-slack-bolt-lazy-function-name": job.function}
    body: str | dict[str, Any] = job.body if job.mode == "http" else json.loads(job.body)
    request = bolt_request(body, job.content_type, headers, mode=job.mode)
    request.context[RECEIVED_AT] = job.received_at.timestamp()
    request.context[LAST_ATTEMPT] = job.attempts >= queue.MAX_ATTEMPTS
    return request


def describe(body: dict[str, Any]) -> str:
    """What a request asked, for the log of a job that failed: who, where, what."""
    user = body.get("user_id") or (body.get("user") or {}).get("id", "")
    channel = body.get("channel_id") or (body.get("channel") or {}).get("id", "")
    actions = body.get("actions") or [{}]
    what = (f"{body.get('command')} {body.get('text', '')}" if body.get("command") else
            (body.get("view") or {}).get("callback_id") or actions[0].get("action_id") or
            body.get("type", "?"))
    return f"{what} by {user or '?'} in {channel or '?'}"[:300]


class JobRunner:
    """Claims jobs and runs them on `threads` threads, until `stop`.

    One thread claims (when woken by a new job, or every `POLL_S`) while a thread is free;
    the pool runs. On SQLite this process is the only runner, so claims left by a run that
    died are released at start; on PostgreSQL they lapse with their lease.
    """

    def __init__(self, app: App, sessions: sessionmaker[Session], clock: Callable[[], datetime],
                 *, name: str, threads: int, lease: timedelta, retry_base_s: float,
                 wakeup: threading.Event, telemetry: Telemetry | None = None) -> None:
        self._app = app
        self._telemetry = telemetry or Telemetry()
        self._sessions = sessions
        self._clock = clock
        self._name = name
        self._lease = lease
        self._retry_base_s = retry_base_s
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="job")
        self._free = threading.Semaphore(threads)
        self._wakeup = wakeup
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._claim_loop, name="job-claims", daemon=True)

    def start(self, *, sole_runner: bool) -> None:
        if sole_runner:
            with transaction(self._sessions) as session:
                released = queue.release_claims(session)
            if released:
                log.info("Running again %d job(s) a previous run left unfinished", released)
        self._thread.start()

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop claiming and finish the jobs already claimed."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True)

    def _claim_loop(self) -> None:
        next_prune = time.monotonic()
        while not self._stopping.is_set():
            self._free.acquire()
            job = self._claim()
            if job is not None:
                self._pool.submit(self._run, job)
                continue
            self._free.release()
            if time.monotonic() >= next_prune:
                self._prune()
                next_prune = time.monotonic() + PRUNE_EVERY_S
            self._wakeup.wait(POLL_S)
            self._wakeup.clear()

    def _prune(self) -> None:
        try:
            with transaction(self._sessions) as session:
                queue.forget_done(session, self._clock())
        except SQLAlchemyError as exc:
            log.warning("Could not delete finished jobs (%s)", type(exc).__name__)

    def _claim(self) -> ClaimedJob | None:
        try:
            with transaction(self._sessions) as session:
                return queue.claim(session, self._name, self._clock(), self._lease)
        except SQLAlchemyError as exc:
            log.warning("Could not claim jobs (%s); trying again", type(exc).__name__)
            return None

    def _run(self, job: ClaimedJob) -> None:
        try:
            started = time.monotonic()
            error = self._execute(job)
            outcome = self._record(job, error)
            self._telemetry.job_ran(job.function, outcome, time.monotonic() - started)
        finally:
            self._free.release()

    def _execute(self, job: ClaimedJob) -> str | None:
        try:
            request = stored_request(job)
            response = self._app.dispatch(request)
        except Exception as exc:  # a stored body that no longer reads
            return f"{type(exc).__name__}: {exc}"
        error = request.context.get(JOB_ERROR)
        if error is not None:
            return f"{type(error).__name__}: {error} [{describe(request.body)}]"
        if response.status != 200:
            return f"no listener ran it (answered {response.status}) [{describe(request.body)}]"
        return None

    def _record(self, job: ClaimedJob, error: str | None) -> str:
        """Store how the attempt ended; the outcome: done, retry, failed or unrecorded."""
        now = self._clock()
        try:
            with transaction(self._sessions) as session:
                if error is None:
                    queue.finish(session, job.id, now)
                    return "done"
                dead = queue.fail(session, job, error, now, self._retry_base_s)
        except SQLAlchemyError as exc:  # its lease runs out and it is run again
            log.error("Could not record the end of job %s (%s)", job.id, type(exc).__name__)
            return "unrecorded"
        if dead:
            log.error("Job %s (%s) failed %d times and is kept as failed: %s", job.id,
                      job.function, job.attempts, error)
            return "failed"
        log.warning("Job %s (%s) failed, will retry: %s", job.id, job.function, error)
        return "retry"
