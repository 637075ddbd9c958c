"""Wires settings, database, gateway, services and Bolt together; serves HTTP or Socket Mode.

One process does everything: it answers Slack, runs the work after each answer as durable
jobs on a thread pool (`incidentbot.jobs`), and, when it holds the scheduler leadership,
posts reminders.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from slack_bolt import App, BoltResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from incidentbot.config import Settings
from incidentbot.core.alerts import from_alertmanager, from_generic
from incidentbot.core.errors import IncidentError
from incidentbot.db import create_db_engine, migrate, ping, session_factory, transaction
from incidentbot.jobs import queue
from incidentbot.jobs.runner import DurableLazyRunner, JobRunner
from incidentbot.jobs.scheduler import ReminderScheduler
from incidentbot.services import Services
from incidentbot.services.context import Context, UserFacingError
from incidentbot.slack import intake
from incidentbot.slack.app_factory import build_bolt_app
from incidentbot.slack.gateway import SlackGateway, build_client
from incidentbot.telemetry import CONTENT_TYPE as METRICS_CONTENT_TYPE
from incidentbot.telemetry import Telemetry

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATHS = ("/healthz", "/readyz")
LIVE_PATH = "/livez"
METRICS_PATH = "/metrics"
ALERT_PATHS = {"/alerts/alertmanager": from_alertmanager, "/alerts/webhook": from_generic}
STUCK_AFTER_S = 30.0  # a pending job older than this makes the bot "degraded"

StartResponse = Callable[..., Any]


@dataclass
class Bot:
    """Everything a running bot holds."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    services: Services
    reminders: ReminderScheduler
    app: App
    jobs: JobRunner
    fallback: ThreadPoolExecutor
    socket: Any = None  # the Socket Mode client while connected in Socket Mode
    http_port: int | None = None  # in Socket Mode, the port the HTTP listener took

    @property
    def ctx(self) -> Context:
        return self.services.ctx

    def alive(self) -> bool:
        """The process's own threads run (whatever the database): the liveness probe."""
        return self.jobs.running and self.reminders.running

    def close(self) -> None:
        self.jobs.stop()  # finish what was claimed
        self.fallback.shutdown(wait=True)
        self.reminders.shutdown()
        self.engine.dispose()


def create_bot(settings: Settings) -> Bot:
    """Connect the database (applying migrations), build the services and the Bolt app, and
    start the job runner and the reminder scheduler."""
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    sessions = session_factory(engine)
    telemetry = Telemetry()  # this bot's own registry
    gateway = SlackGateway(build_client(settings.slack_bot_token, settings.slack_api_url),
                           telemetry)
    scheduler = ReminderScheduler(engine, threads=settings.work_threads)
    ctx = Context(settings, sessions, gateway, scheduler)
    telemetry.watch_database(sessions, ctx.clock)
    services = Services.build(ctx, bot_user_id=gateway.bot_user_id())
    fallback = ThreadPoolExecutor(4, thread_name_prefix="unstored")
    wake = threading.Event()
    lazy = DurableLazyRunner(sessions, ctx.clock, wake=wake.set, fallback=fallback)
    app = build_bolt_app(services, lazy)
    jobs = JobRunner(app, sessions, ctx.clock, name=f"{socket.gethostname()}:{os.getpid()}",
                     threads=settings.work_threads,
                     lease=timedelta(seconds=settings.job_lease_seconds),
                     retry_base_s=settings.job_retry_seconds, wakeup=wake, telemetry=telemetry)
    _schedule(scheduler, services)
    jobs.start(sole_runner=engine.dialect.name == "sqlite")
    threading.Thread(target=services.declaration.refresh_recent_cards, name="card-refresh",
                     daemon=True).start()
    return Bot(settings=settings, engine=engine, sessions=sessions, services=services,
               reminders=scheduler, app=app, jobs=jobs, fallback=fallback)


def _schedule(scheduler: ReminderScheduler, services: Services) -> None:
    """Start the scheduler. On becoming its leader (at start on SQLite) a replica settles
    reminders a crash left claimed but unconfirmed (confirms those Slack stored, posts the
    others), then re-plans every open incident's reminder from the database."""

    def take_over() -> None:
        recovered = services.updates.recover_reminders()
        planned = services.declaration.plan_all_reminders()
        services.paging.replan_pending()
        scheduler.every("stale", services.ctx.settings.sweep_minutes)
        log.info("Reminders planned for %d open incident(s); %d recovered after a crash",
                 planned, recovered)

    scheduler.on("reminder", services.updates.fire_reminder)
    scheduler.on("postmortem", services.closing.postmortem_due)
    scheduler.on("page", services.paging.escalate_due)
    scheduler.on("archive_notice", services.closing.archive_notice)
    scheduler.on("archive", services.closing.archive)
    scheduler.on("stale", services.updates.nudge_stale)
    scheduler.start(on_leadership=take_over)


class WsgiApp:
    """`POST /slack/events` for everything Slack sends; `GET /healthz` (or `/readyz`: ready to
    serve) and `GET /livez` (the process runs) for probes; `GET /metrics` for Prometheus;
    the alert webhooks."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        if path in HEALTH_PATHS and method == "GET":
            return self.health(start_response)
        if path == LIVE_PATH and method == "GET":
            alive = self.bot.alive()
            return _json(start_response, 200 if alive else 503, {"ok": alive})
        if path == METRICS_PATH and method == "GET":
            start_response("200 OK", [("Content-Type", METRICS_CONTENT_TYPE)])
            return [self.bot.ctx.telemetry.exposition()]
        if path == EVENTS_PATH and method == "POST":
            return self.slack(environ, start_response)
        if path in ALERT_PATHS and method == "POST":
            return self.alert(path, environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found"]

    def slack(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Verify, parse and validate the raw request, refuse replays, then run Bolt."""
        started, telemetry = time.perf_counter(), self.bot.ctx.telemetry
        headers = _headers(environ)
        raw = _read_body(environ, intake.MAX_BODY_BYTES + 1)
        admitted = intake.admit(raw, headers, self.bot.settings.slack_signing_secret)
        if isinstance(admitted, intake.Refusal):
            telemetry.request_refused(admitted.status)
            return _json(start_response, admitted.status, {"ok": False,
                                                           "error": admitted.reason})
        if not self._first_time(headers.get("x-slack-signature", "")):
            log.warning("Refused a replayed request")
            telemetry.request_refused(401)
            return _json(start_response, 401, {"ok": False, "error": "replayed request"})
        response = self.bot.app.dispatch(admitted)
        telemetry.request_answered(admitted.body, time.perf_counter() - started)
        return _bolt_answer(start_response, response)

    def _first_time(self, signature: str) -> bool:
        """False for a signed request seen before (a replay within the 5-minute window)."""
        try:
            return self.bot.services.ledger.remember_request(signature)
        except SQLAlchemyError as exc:
            log.warning("Replay ledger unavailable (%s); relying on signatures alone",
                        type(exc).__name__)
            return True

    def alert(self, path: str, environ: dict[str, Any],
              start_response: StartResponse) -> Iterable[bytes]:
        """Monitoring webhooks, authenticated with `Authorization: Bearer ALERT_WEBHOOK_TOKEN`."""
        token = self.bot.settings.alert_webhook_token
        if not token:
            return _json(start_response, 404,
                         {"ok": False, "error": "alert webhooks are off: set ALERT_WEBHOOK_TOKEN"})
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _json(start_response, 401, {"ok": False, "error": "bad token"})
        try:
            payload = json.loads(_read_body(environ, intake.MAX_BODY_BYTES) or b"null")
            notice = ALERT_PATHS[path](payload)
        except (ValueError, IncidentError) as exc:
            return _json(start_response, 400, {"ok": False, "error": str(exc)})
        try:
            result = self.bot.services.alerts.receive(notice)
        except (UserFacingError, IncidentError) as exc:
            log.error("Alert %s not handled: %s", notice.group_key, exc)
            return _json(start_response, 503, {"ok": False, "error": "not handled; retry"})
        except Exception:
            log.exception("Alert %s failed", notice.group_key)
            return _json(start_response, 503, {"ok": False, "error": "internal error; retry"})
        return _json(start_response, 200, {"ok": True, "result": result})

    def health(self, start_response: StartResponse) -> Iterable[bytes]:
        """200 while the database answers and the scheduler runs ("degraded" when jobs are
        failing or waiting too long); 503 otherwise."""
        body = health_report(self.bot)
        return _json(start_response, 200 if body["status"] != "down" else 503, body)


def health_report(bot: Bot) -> dict[str, Any]:
    scheduler = "up" if bot.reminders.running else "down"
    try:
        ping(bot.engine)
        with transaction(bot.sessions) as session:
            stats = queue.stats(session, bot.ctx.clock())
        database = "up"
    except SQLAlchemyError:
        database, stats = "down", None
    status = "up" if database == scheduler == "up" else "down"
    jobs: dict[str, Any] = {}
    if stats is not None:
        jobs = {"pending": stats.pending, "failed": stats.failed,
                "oldest_pending_s": round(stats.oldest_pending_s, 1)}
        if status == "up" and (stats.failed or stats.oldest_pending_s > STUCK_AFTER_S):
            status = "degraded"
    report = {"ok": status != "down", "status": status, "database": database,
              "scheduler": scheduler, "leader": bot.reminders.is_leader, "jobs": jobs}
    if bot.socket is not None:
        report["slack"] = "up" if bot.socket.is_connected() else "reconnecting"
    return report


STATUS_LINES = {200: "200 OK", 400: "400 Bad Request", 401: "401 Unauthorized",
                404: "404 Not Found", 413: "413 Payload Too Large",
                503: "503 Service Unavailable"}


def _status_line(status: int) -> str:
    return STATUS_LINES.get(status, f"{status} Status")


def _bolt_answer(start_response: StartResponse, response: BoltResponse) -> Iterable[bytes]:
    headers = [(name, value) for name, values in response.headers.items()
               for value in values if name.lower() != "content-length"]
    start_response(_status_line(response.status), headers)
    return [response.body.encode()]


def _json(start_response: StartResponse, status: int, body: dict[str, Any]) -> Iterable[bytes]:
    start_response(_status_line(status), [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers, lower-case names ("x-slack-signature")."""
    found = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
             if key.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        found["content-type"] = environ["CONTENT_TYPE"]
    return found


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(min(length, limit)) if length > 0 else b""


def make_http_server(bot: Bot, host: str | None = None, port: int | None = None) -> Any:
    """A waitress server (multi-threaded, production-grade) that is not yet running."""
    from waitress.server import create_server

    return create_server(
        WsgiApp(bot), host=host or bot.settings.host,
        port=bot.settings.port if port is None else port,
        threads=bot.settings.server_threads, ident="incidentbot",
        clear_untrusted_proxy_headers=True,
    )


def serve_http(bot: Bot) -> None:
    make_http_server(bot).run()


SOCKET_PING_S = 3.0  # websocket pings, and how often a lost connection is noticed and replaced
SOCKET_PONG_S = 0.9  # a pong later than this ends the connection; also how long a swap waits
SOCKET_CONNECT_GRACE_S = 2.0  # a new session's time to open before the monitor may replace it
REFUSED_TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive",
                                  "token_revoked", "not_allowed_token_type"})


class AppTokenRefused(Exception):
    """Slack refused SLACK_APP_TOKEN when asked for a Socket Mode URL."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def socket_mode_handler(app: App, app_token: str,
                        ping_interval: float = SOCKET_PING_S) -> Any:
    """Bolt's Socket Mode adapter on the `websocket-client` package, pinging every 3 s.

    Chosen by measurement against the fake Socket Mode server (`python -m bench.socket_clients`):
    slack_sdk's built-in client spun a CPU core and stayed deaf for minutes after a connection
    was dropped without a close frame. This client answers on the new socket at once after
    Slack's `refresh_requested` and replaces a dropped connection within a second; its monitor
    (every `ping_interval`) is the backstop, given a grace period (see `_SocketClient`).
    """
    import time

    from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler
    from slack_sdk.socket_mode.websocket_client import SocketModeClient

    class _SocketClient(SocketModeClient):
        """The monitor leaves a session alone for its first seconds: a session is created
        before its thread opens the socket (up to 0.5 s later), and replacing it in that
        window could leave that thread running a closed session for ever, deaf."""

        connected_at = 0.0

        def connect(self) -> None:
            self.connected_at = time.monotonic()
            super().connect()
            self.connected_at = time.monotonic()

        def _run_current_session(self) -> None:
            """As slack_sdk's, with a pong deadline: without one the socket thread waits in
            `select` with no timeout, and a session closed from another thread (the swap after
            `refresh_requested`) keeps it, deaf, until the OS gives up on the socket."""
            session = self.current_session
            if session is None:
                return
            try:
                session.run_forever(ping_interval=self.ping_interval,
                                    ping_timeout=SOCKET_PONG_S)
            except Exception as exc:
                self.logger.warning("Socket Mode session ended: %s", exc)
                session.close()

        def _monitor_current_session(self) -> None:
            if time.monotonic() - self.connected_at >= SOCKET_CONNECT_GRACE_S:
                super()._monitor_current_session()

    class _Handler(SocketModeHandler):
        def __init__(self) -> None:  # SocketModeHandler's, with the client above
            self.app, self.app_token = app, app_token
            self.client = _SocketClient(
                app_token=app_token, logger=logging.getLogger("incidentbot.socket_mode"),
                web_client=app.client, ping_interval=ping_interval)
            self.client.socket_mode_request_listeners.append(self.handle)

    return _Handler()


def serve_socket_mode(bot: Bot, stop: threading.Event | None = None) -> None:
    """Answer Slack over Socket Mode until `stop` is set (or SIGTERM / Ctrl-C), with the HTTP
    listener (probes, metrics, alert webhooks) on PORT beside it unless HTTP_LISTENER is
    false. Raises `AppTokenRefused` when Slack refuses the app token."""
    from slack_sdk.errors import SlackApiError

    stop = stop or threading.Event()
    handler = socket_mode_handler(bot.app, bot.settings.slack_app_token)
    server = make_http_server(bot) if bot.settings.http_listener else None
    listener = threading.Thread(target=server.run, name="http", daemon=True) if server else None
    if listener is not None:
        listener.start()
    try:
        bot.http_port = server.effective_port if server is not None else None
        log.info("Socket Mode: connecting to Slack (HTTP listener: %s)",
                 f"port {bot.http_port}" if server is not None else "off")
        try:  # asked first here so a refusal is one clear error, not the client's log lines
            bot.app.client.apps_connections_open(app_token=bot.settings.slack_app_token)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error in REFUSED_TOKEN_ERRORS:
                raise AppTokenRefused(error) from None
            raise
        handler.connect()
        bot.socket = handler.client
        while not stop.wait(1.0):
            pass
    finally:
        bot.socket = None
        handler.close()
        if server is not None and listener is not None:
            stop_http_server(server)
            listener.join(timeout=5)


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
