"""Wires settings, database, gateway and Bolt together and serves HTTP or Socket Mode."""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from incidentbot.ack_priority import AckPriority
from incidentbot.config import Settings
from incidentbot.core.alerts import from_alertmanager, from_generic
from incidentbot.core.errors import IncidentError
from incidentbot.db import create_db_engine, migrate, ping, session_factory
from incidentbot.group_commit import GroupCommit
from incidentbot.reminders import ReminderScheduler
from incidentbot.slack.alerts import AlertWorkflows
from incidentbot.slack.app_factory import build_bolt_app
from incidentbot.slack.closing import ClosingWorkflows
from incidentbot.slack.gateway import SlackGateway, build_client
from incidentbot.slack.paging import PagingWorkflows
from incidentbot.slack.response import ResponseWorkflows
from incidentbot.slack.workflows import IncidentWorkflows, UserFacingError

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
ALERT_PATHS = {"/alerts/alertmanager": from_alertmanager, "/alerts/webhook": from_generic}

StartResponse = Callable[..., Any]


@dataclass
class Bot:
    """Everything a running bot holds."""

    settings: Settings
    engine: Engine
    flows: IncidentWorkflows
    response: ResponseWorkflows
    reminders: ReminderScheduler
    alerts: AlertWorkflows
    app: App
    work: ThreadPoolExecutor
    priority: AckPriority

    def close(self) -> None:
        self.work.shutdown(wait=True)  # finish what was acknowledged
        self.reminders.shutdown()
        self.flows.writes.close()
        self.engine.dispose()


def _take_over(
    flows: IncidentWorkflows, response: ResponseWorkflows, paging: PagingWorkflows
) -> None:
    """On becoming the scheduler leader (at start on SQLite): post reminders a crash left
    claimed but unposted, then re-plan every open incident's reminder from the database."""
    recovered = response.recover_reminders()
    planned = flows.plan_all_reminders()
    paging.replan_pending()
    if flows.reminders is not None:
        flows.reminders.every("stale", flows.settings.sweep_minutes)
    log.info("Reminders planned for %d open incident(s); %d recovered after a crash",
             planned, recovered)


def create_bot(settings: Settings) -> Bot:
    """Connect the database (applying migrations), start reminders and build the Bolt app."""
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    priority = AckPriority()
    gateway = SlackGateway(build_client(settings.slack_bot_token, settings.slack_api_url),
                           before_call=priority.step_aside)
    flows = IncidentWorkflows(settings, session_factory(engine), gateway,
                              writes=GroupCommit(engine))
    response = ResponseWorkflows(flows, bot_user_id=gateway.bot_user_id())
    closing = ClosingWorkflows(flows)
    paging = PagingWorkflows(flows)
    reminders = ReminderScheduler(engine, response.fire_reminder, closing.postmortem_due,
                                  on_leadership=lambda: _take_over(flows, response, paging))
    reminders.on("page", paging.escalate_due)
    reminders.on("archive_notice", closing.archive_notice)
    reminders.on("archive", closing.archive)
    reminders.on("stale", response.nudge_stale)
    flows.reminders = reminders
    reminders.start()
    threading.Thread(target=flows.refresh_recent_cards, name="card-refresh", daemon=True).start()
    work = ThreadPoolExecutor(settings.work_threads, thread_name_prefix="work",
                              initializer=priority.mark_background)
    app = build_bolt_app(settings, flows, response, closing, paging, work)
    return Bot(settings=settings, engine=engine, flows=flows, response=response,
               reminders=reminders, alerts=AlertWorkflows(flows), app=app, work=work,
               priority=priority)


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
        scheduler = "up" if self.bot.reminders.running else "down"
        try:
            ping(self.bot.engine)
            database = "up"
        except SQLAlchemyError:
            database = "down"
        healthy = database == scheduler == "up"
        status = "200 OK" if healthy else "503 Service Unavailable"
        body = {"ok": healthy, "database": database, "scheduler": scheduler,
                "leader": self.bot.reminders.is_leader}
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
