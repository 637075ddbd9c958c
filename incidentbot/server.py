"""Wires settings, database, gateway and Bolt together and serves HTTP or Socket Mode."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hmac
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from incidentbot import inbox
from incidentbot.ack_priority import AckPriority, give_way, give_way_at_each_step
from incidentbot.config import Settings
from incidentbot.core.alerts import from_alertmanager, from_generic
from incidentbot.core.errors import IncidentError
from incidentbot.db import (
    Checkpointer,
    create_db_engine,
    engine_file,
    migrate,
    ping,
    session_factory,
)
from incidentbot.group_commit import GroupCommit, Row
from incidentbot.inbox import INBOX_KEY, INBOX_TABLE, InboxStore
from incidentbot.reminders import ReminderScheduler
from incidentbot.slack.alerts import AlertWorkflows
from incidentbot.slack.app_factory import build_bolt_app
from incidentbot.slack.closing import ClosingWorkflows
from incidentbot.slack.gateway import SlackGateway, build_client
from incidentbot.slack.handoff import Handoff, InlineWork, Replayer
from incidentbot.slack.paging import PagingWorkflows
from incidentbot.slack.response import ResponseWorkflows
from incidentbot.slack.workflows import IncidentWorkflows, UserFacingError
from incidentbot.spool import SpoolReader, SpoolWriter
from incidentbot.worker import DoneMarker, DonePipe, InboxWorker, PipeWake, Wake, worker_name

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
WORKER_WATCH_S = 0.5
STARTING, READY, LEADING = 0, 1, 2
ALERT_PATHS = {"/alerts/alertmanager": from_alertmanager, "/alerts/webhook": from_generic}

StartResponse = Callable[..., Any]


ROLES = ("all", "front", "worker")


@dataclass
class Bot:
    """Everything a running bot holds.

    `role` is what this process does: "all" answers Slack and runs the work (a thread reads
    the inbox); "front" answers Slack and stores the work for worker processes; "worker"
    runs the work and the scheduler, and serves nothing.
    """

    settings: Settings
    engine: Engine
    flows: IncidentWorkflows
    response: ResponseWorkflows
    reminders: ReminderScheduler
    alerts: AlertWorkflows
    app: App
    work: Executor
    priority: AckPriority
    inbox_store: InboxStore
    inbox: InboxWorker | None = None
    role: str = "all"
    workers: WorkerProcesses | None = None
    checkpointer: Checkpointer | None = None
    done_marker: DoneMarker | None = None
    spool: SpoolWriter | None = None

    def workers_alive(self) -> bool:
        return self.workers is None or self.workers.alive()

    def workers_lead(self) -> bool:
        return self.workers is not None and self.workers.lead()

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self.inbox is not None:
            self.inbox.stop()  # finish what was claimed
        self.work.shutdown(wait=True)  # and what runs here
        if self.workers is not None:  # they finish what this process stored
            self.workers.stop()
        if self.done_marker is not None:  # and it marks what they reported done
            self.done_marker.stop()
        self.reminders.shutdown()
        if self.spool is not None:
            self.spool.close()
        self.inbox_store.close()
        self.flows.writes.close()
        self.engine.dispose()


def launch(settings: Settings) -> Bot:
    """The bot as `app.py` runs it: this process answers Slack, and `WORKER_PROCESSES`
    worker processes (see `worker_process_count`) do the work; with none, this one does."""
    workers = WorkerProcesses(settings, worker_process_count(settings))
    if not workers.count:
        return create_bot(settings)
    bot = create_bot(settings, role="front", wake=workers.wake, worker=workers.assignee,
                     done=workers.done)
    bot.workers = workers
    workers.start()
    return bot


def _take_over(
    flows: IncidentWorkflows, response: ResponseWorkflows, paging: PagingWorkflows
) -> None:
    """On becoming the scheduler leader (at start on SQLite): settle reminders a crash left
    claimed but unconfirmed (confirm those Slack stored, post the others), then re-plan every
    open incident's reminder from the database."""
    recovered = response.recover_reminders()
    planned = flows.plan_all_reminders()
    paging.replan_pending()
    if flows.reminders is not None:
        flows.reminders.every("stale", flows.settings.sweep_minutes)
    log.info("Reminders planned for %d open incident(s); %d recovered after a crash",
             planned, recovered)


def create_bot(settings: Settings, *, role: str = "all", wake: Wake | None = None,
               worker: str | None = None, done: DonePipe | None = None) -> Bot:
    """Connect the database (applying migrations), start reminders and build the Bolt app.

    `wake` is set whenever a request is stored in the inbox (shared with worker processes).
    `worker` names the inbox worker: a worker process's own name, or for the serving
    process ("front") the worker its jobs are stored claimed by (None: any worker claims).
    `done` carries the ids of jobs worker processes finished to their serving process, which
    marks them done.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    # a serving process's commits leave SQLite's checkpoints to its worker process
    checkpoints = role != "front"
    engine = create_db_engine(settings.database_url, checkpoints=checkpoints)
    if role == "worker":  # before any other thread runs statements (`give_way_at_each_step`)
        give_way_at_each_step(engine)
    migrate(engine)
    priority = AckPriority()
    # nothing is answered in a worker process: it gives way to the serving process instead
    gateway = SlackGateway(build_client(settings.slack_bot_token, settings.slack_api_url),
                           before_call=give_way if role == "worker" else priority.step_aside)
    # the commit delay gathers the rows of answers waiting; a worker's steps answer nothing
    writes = GroupCommit(engine, delay_s=0.0) if role == "worker" else GroupCommit(engine)
    flows = IncidentWorkflows(settings, session_factory(engine), gateway, writes=writes)
    worker = worker or (worker_name() if role == "all" else None)
    store = InboxStore.open(settings.database_url, engine, flows.writes,
                            checkpoints=checkpoints)
    spool_base = _spool_base(store)
    wake = wake if wake is not None else threading.Event()
    spool = SpoolWriter.open(spool_base, store.sessions, flows.clock, wake=wake.set) \
        if spool_base and role == "front" and worker else None
    response = ResponseWorkflows(flows, bot_user_id=gateway.bot_user_id(), spool=spool)
    closing = ClosingWorkflows(flows)
    paging = PagingWorkflows(flows)
    reminders = ReminderScheduler(engine, response.fire_reminder, closing.postmortem_due,
                                  on_leadership=lambda: _take_over(flows, response, paging),
                                  lead=role != "front")
    reminders.on("page", paging.escalate_due)
    reminders.on("archive_notice", closing.archive_notice)
    reminders.on("archive", closing.archive)
    reminders.on("stale", response.nudge_stale)
    flows.reminders = reminders
    reminders.start()
    local = ThreadPoolExecutor(settings.work_threads, thread_name_prefix="work",
                               initializer=priority.mark_background)

    def replaying_app() -> App:
        return build_bolt_app(settings, flows, response, closing, paging, InlineWork(),
                              replaying=True)

    if role == "worker":
        give_way_at_each_step(store.engine)  # its own file (SQLite): no thread used it yet
        work: Executor = local
        app = replaying_app()
    else:
        work = Handoff(local, store=_storing(store, spool, flows.clock, wake, worker),
                       remember=flows.remember_request)
        app = build_bolt_app(settings, flows, response, closing, paging, work)
    inbox_worker = None
    if role != "front":
        threading.Thread(target=flows.refresh_recent_cards, name="card-refresh",
                         daemon=True).start()
        replay = Replayer(app if role == "worker" else replaying_app(), gateway)
        intake = SpoolReader(spool_base, worker, flows.sessions).intake \
            if spool_base and role == "worker" and worker else None
        inbox_worker = InboxWorker(store.sessions, replay, wake, threads=settings.work_threads,
                                   clock=flows.clock, initializer=priority.mark_background,
                                   name=worker, report_done=done.send if done else None,
                                   intake=intake)
        inbox_worker.start()
    done_marker = None
    if role == "front" and done is not None:
        done_marker = DoneMarker(store.sessions, done.receive, clock=flows.clock,
                                 priority=priority)
        done_marker.start()
    return Bot(settings=settings, engine=engine, flows=flows, response=response,
               reminders=reminders, alerts=AlertWorkflows(flows), app=app, work=work,
               priority=priority, inbox_store=store, inbox=inbox_worker, role=role,
               checkpointer=_checkpointer(role, engine, store), done_marker=done_marker,
               spool=spool)


def _spool_base(store: InboxStore) -> Path | None:
    """The inbox's own SQLite file, beside which a serving process spools (`spool`)."""
    found = engine_file(store.engine) if store.own_file else None
    return Path(found) if found else None


def _storing(store: InboxStore, spool: SpoolWriter | None, clock: Callable[[], datetime],
             wake: Wake, worker: str | None) -> Callable[[str, str, str], bool]:
    """How a serving process stores a request with work (False: stored before, a replay),
    and wakes a worker: in the spool (SQLite, with a worker process to move it into the
    inbox; the spool wakes it), else in the inbox, claimed by `worker`."""

    def put(signature: str, body: str, content_type: str) -> bool:
        if spool is not None:
            return spool.append(signature, body, content_type)
        fresh = store.writes.insert(Row(INBOX_TABLE, inbox.job_row(
            signature, body, content_type, clock(), worker), INBOX_KEY))
        if fresh:
            wake.set()
        return fresh

    return put


def _checkpointer(role: str, engine: Engine, store: InboxStore) -> Checkpointer | None:
    """A worker process checkpoints the SQLite files its serving process writes."""
    if role != "worker":
        return None
    files = [e for e in dict.fromkeys((engine, store.engine)) if engine_file(e)]
    if not files:
        return None
    checkpointer = Checkpointer(files)
    checkpointer.start()
    return checkpointer


class WsgiApp:
    """`POST /slack/events` for everything Slack sends, `GET /healthz` for probes."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.slack = SlackRequestHandler(bot.app, path=EVENTS_PATH)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH and environ.get("REQUEST_METHOD") == "GET":
            return self.health(start_response)
        if path == EVENTS_PATH:  # Bolt verifies signatures; `Listeners.admit` refuses replays
            with self.bot.priority.answering():
                return self.slack(environ, start_response)
        if path in ALERT_PATHS and environ.get("REQUEST_METHOD") == "POST":
            return self.alert(path, environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found"]

    def alert(self, path: str, environ: dict[str, Any],
              start_response: StartResponse) -> Iterable[bytes]:
        """Monitoring webhooks, authenticated with `Authorization: Bearer ALERT_WEBHOOK_TOKEN`."""
        token = self.bot.settings.alert_webhook_token
        if not token:
            return _json(start_response, "404 Not Found",
                         {"ok": False, "error": "alert webhooks are off: set ALERT_WEBHOOK_TOKEN"})
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _json(start_response, "401 Unauthorized", {"ok": False, "error": "bad token"})
        try:
            payload = json.loads(_read_body(environ) or b"null")
            notice = ALERT_PATHS[path](payload)
        except (ValueError, IncidentError) as exc:
            return _json(start_response, "400 Bad Request", {"ok": False, "error": str(exc)})
        try:
            result = self.bot.alerts.receive(notice)
        except (UserFacingError, IncidentError) as exc:
            log.error("Alert %s not handled: %s", notice.group_key, exc)
            return _json(start_response, "503 Service Unavailable",
                         {"ok": False, "error": "not handled; retry"})
        except Exception:
            log.exception("Alert %s failed", notice.group_key)
            return _json(start_response, "500 Internal Server Error",
                         {"ok": False, "error": "internal error; retry"})
        return _json(start_response, "200 OK", {"ok": True, "result": result})

    def health(self, start_response: StartResponse) -> Iterable[bytes]:
        """Healthy while the database answers and the scheduler and worker processes run."""
        scheduler = "up" if self.bot.reminders.running else "down"
        workers = "up" if self.bot.workers_alive() else "down"
        try:
            ping(self.bot.engine)
            database = "up"
        except SQLAlchemyError:
            database = "down"
        healthy = database == scheduler == workers == "up"
        status = "200 OK" if healthy else "503 Service Unavailable"
        body = {"ok": healthy, "database": database, "scheduler": scheduler, "workers": workers,
                "leader": self.bot.reminders.is_leader or self.bot.workers_lead()}
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> Iterable[bytes]:
    start_response(status, [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


class EverySoOften:
    """A logger's `warning`, shown at most once per `interval_s` with a count of the others.

    Held-back calls return before a log record is even made (a few hundred nanoseconds).
    """

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._next = 0.0
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        if self._held:
            message = f"{message} (and {self._held} more since the last one shown)"
        self._next, self._held = now + self._interval_s, 0
        self._logger.warning(message, *args)


def quiet_queue_warnings(server: Any) -> None:
    """Waitress warns "Task queue depth is N" for every request that finds all its threads
    busy, while holding the lock those threads take work from: under a burst, a line per
    request and a slower server. Keep one every 10 s, with the count of the others."""
    dispatcher = server.task_dispatcher
    dispatcher.queue_logger = EverySoOften(dispatcher.queue_logger, interval_s=10.0)


def make_http_server(bot: Bot, host: str | None = None, port: int | None = None) -> Any:
    """A waitress server (multi-threaded, production-grade) that is not yet running."""
    from waitress.server import create_server

    server = create_server(
        WsgiApp(bot), host=host or bot.settings.host,
        port=bot.settings.port if port is None else port,
        threads=bot.settings.server_threads, ident="incidentbot",
        clear_untrusted_proxy_headers=True,
    )
    quiet_queue_warnings(server)
    return server


def serve_http(bot: Bot) -> None:
    server = make_http_server(bot)
    log.info("HTTP mode: listening on http://%s:%s%s", bot.settings.host,
             server.effective_port, EVENTS_PATH)
    server.run()


def serve_socket_mode(bot: Bot) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    log.info("Socket Mode: connecting to Slack")
    SocketModeHandler(bot.app, bot.settings.slack_app_token).start()


def stop_http_server(server: Any) -> None:
    """Stop a server started with `make_http_server(...).run()` in another thread.

    The sockets are closed from inside the server's own loop (through its trigger), so the
    loop ends cleanly, then in-flight requests get up to 5 s to finish.
    """

    def close_all() -> None:
        for channel in list(server._map.values()):
            channel.close()

    try:
        server.trigger.pull_trigger(close_all)
    except OSError:  # the loop has already closed its trigger: nothing left to wake
        close_all()
    server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)


def worker_process_count(settings: Settings) -> int:
    """How many worker processes to start: none in Socket Mode (its requests are unsigned
    and cannot be stored), at most one on SQLite (one process may run the scheduler)."""
    if settings.socket_mode:
        return 0
    if settings.database_url.startswith("sqlite"):
        return min(settings.worker_processes, 1)
    return settings.worker_processes


class WorkerProcesses:
    """The worker processes of a serving process: started with `spawn`, restarted when one
    dies, stopped (SIGTERM: finish what was claimed) with it."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        self.count = count
        self._context = multiprocessing.get_context("spawn")
        self.wake: Wake = PipeWake(self._context)
        self.done = DonePipe(self._context)
        # each worker's state, written by the worker: STARTING, READY or LEADING
        self._states = self._context.Array("b", max(count, 1), lock=False)
        self._processes: list[Any] = []
        self._stopping = threading.Event()
        # a single worker takes the jobs stored claimed by it, without claiming (a write)
        self.assignee = worker_name(os.getpid(), 0) if count == 1 else None

    def start(self) -> None:
        self._processes = [self._spawn(index) for index in range(self.count)]
        threading.Thread(target=self._watch, name="worker-watch", daemon=True).start()

    def alive(self) -> bool:
        """Every worker is running and has started its inbox worker and scheduler."""
        return all(process.is_alive() and self._states[index] >= READY
                   for index, process in enumerate(self._processes))

    def lead(self) -> bool:
        """Whether one of them runs the scheduler (each reports every `WORKER_WATCH_S`)."""
        return any(process.is_alive() and self._states[index] == LEADING
                   for index, process in enumerate(self._processes))

    def stop(self, timeout_s: float = 30) -> None:
        self._stopping.set()
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.join(timeout_s)
            if process.is_alive():
                process.kill()

    def _spawn(self, index: int) -> Any:
        self._states[index] = STARTING
        process = self._context.Process(target=run_worker,
                                        args=(self._settings, self.wake, self.done,
                                              self._states, index),
                                        name=f"incidentbot-worker-{index}", daemon=True)
        process.start()
        return process

    def _watch(self) -> None:
        while not self._stopping.wait(WORKER_WATCH_S):
            for index, process in enumerate(self._processes):
                if not process.is_alive() and not self._stopping.is_set():
                    log.error("Worker process %s exited (code %s); starting another",
                              process.pid, process.exitcode)
                    self._processes[index] = self._spawn(index)


def run_worker(settings: Settings, wake: Wake, done: DonePipe, states: Any,
               index: int) -> None:
    """A worker process: the inbox worker and the scheduler, until SIGTERM or until the
    serving process that started it is gone."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    parent = os.getppid()
    die_with_parent()
    lower_cpu_priority(settings)
    bot = create_bot(settings, role="worker", wake=wake, worker=worker_name(parent, index),
                     done=done)
    states[index] = LEADING if bot.reminders.is_leader else READY
    log.info("Worker process %s ready", os.getpid())
    try:
        while not stop.wait(WORKER_WATCH_S):
            states[index] = LEADING if bot.reminders.is_leader else READY
            if os.getppid() != parent:
                log.warning("The serving process is gone; stopping")
                break
    finally:
        states[index] = STARTING
        bot.close()


def lower_cpu_priority(settings: Settings) -> None:
    """Answering Slack goes first, at the CPU too: a worker process lowers its priority
    (`WORKER_NICENESS`) and, on Linux, takes the SCHED_IDLE policy (`WORKER_SCHED_IDLE`),
    which a waking thread of normal policy preempts at once. Call it before any thread
    starts: threads inherit their creator's policy."""
    with contextlib.suppress(OSError):
        os.nice(settings.worker_niceness)
    if settings.worker_sched_idle and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: be killed the moment the serving process dies, as if we were one process (a
    crash of the server is a crash of the bot; claims we held lapse or are released at the
    next start). Elsewhere the parent is polled every `WORKER_WATCH_S`."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
