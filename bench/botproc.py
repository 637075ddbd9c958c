"""The process under test: `python -m bench.botproc bot|baseline`, settings from the environment.

`bot` is the real bot (`create_bot` + `make_http_server`, as `app.py` serves it). `baseline` is
a bare Bolt `App` whose listeners only `ack()`, built the same way (same WebClient, signing
secret and `process_before_response=True`, as `build_bolt_app`) and served by the same
waitress stack (same thread count). `bolt-default` is the same baseline with Bolt's default
`process_before_response=False`, for reference. All answer `GET /healthz`.

A side server on `BENCH_STATS_PORT` (never the port under test) reports timings taken inside
the process: how long `create_bot` and each `plan_all_reminders` took, and when each
reminder job started running.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from incidentbot.config import Settings, load_settings

STARTED = time.time()
STATS: dict[str, Any] = {"started": STARTED, "plan_all": [], "fires": {}, "app_s": []}
LOCK = threading.Lock()


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def instrument() -> None:
    """Time reminder planning and record reminder job start times (wrappers, this process)."""
    from incidentbot.slack.response import ResponseWorkflows
    from incidentbot.slack.workflows import IncidentWorkflows

    plan_all = IncidentWorkflows.plan_all_reminders
    fire = ResponseWorkflows.fire_reminder

    def timed_plan_all(self: IncidentWorkflows) -> int:
        started = time.perf_counter()
        count = plan_all(self)
        STATS["plan_all"].append({"count": count, "seconds": time.perf_counter() - started})
        return count

    def recorded_fire(self: ResponseWorkflows, incident_id: int) -> None:
        with LOCK:
            STATS["fires"].setdefault(str(incident_id), time.time())
        fire(self, incident_id)

    IncidentWorkflows.plan_all_reminders = timed_plan_all  # type: ignore[method-assign]
    ResponseWorkflows.fire_reminder = recorded_fire  # type: ignore[method-assign]


def build_bot(settings: Settings) -> tuple[Any, Callable[[], None]]:
    from incidentbot.server import launch, make_http_server

    instrument()
    started = time.perf_counter()
    bot = launch(settings)
    STATS["create_bot_s"] = time.perf_counter() - started
    return make_http_server(bot, host=settings.host, port=settings.port), bot.close


def build_baseline(settings: Settings, *, deferred: bool = False) -> tuple[Any, Callable[[], None]]:
    """The floor; `deferred` builds it with Bolt's default `process_before_response=False`
    instead (for reference: Bolt then polls for each listener's ack every 10 ms)."""
    from slack_bolt import Ack, App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from waitress.server import create_server

    from incidentbot.server import quiet_queue_warnings
    from incidentbot.slack.gateway import build_client

    started = time.perf_counter()
    app = App(client=build_client(settings.slack_bot_token, settings.slack_api_url),
              signing_secret=settings.slack_signing_secret, process_before_response=not deferred,
              logger=logging.getLogger("baseline.bolt"))

    def ack_only(ack: Ack) -> None:
        ack()

    app.command("/incident")(ack_only)
    app.action(re.compile(".*"))(ack_only)
    app.view(re.compile(".*"))(ack_only)
    app.event("message")(ack_only)
    slack = SlackRequestHandler(app, path="/slack/events")

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"ok": true}']
        return slack(environ, start_response)

    server = create_server(wsgi, host=settings.host, port=settings.port,
                           threads=settings.server_threads, ident="incidentbot",
                           clear_untrusted_proxy_headers=True)
    quiet_queue_warnings(server)  # the server stack as `make_http_server` sets it up
    STATS["create_bot_s"] = time.perf_counter() - started
    return server, lambda: None


def time_application(server: Any) -> None:
    """Record how long the WSGI application takes per request (from waitress handing it the
    request to the application returning its answer): the time inside the process, to set
    against the latency the load generator sees on the wire. `GET /app` returns and clears
    them."""
    application = server.application

    def timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        try:
            return application(environ, start_response)
        finally:
            STATS["app_s"].append(time.perf_counter() - started)

    server.application = timed


class _Stats(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        with LOCK:
            if self.path == "/app":
                body = json.dumps({"app_s": STATS["app_s"]}).encode()
                STATS["app_s"] = []
            else:
                body = json.dumps({**STATS, "app_s": None, "rss_kib": rss_kib(),
                                   "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "bot"
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stats = ThreadingHTTPServer(("127.0.0.1", int(os.environ["BENCH_STATS_PORT"])), _Stats)
    threading.Thread(target=stats.serve_forever, daemon=True, name="bench-stats").start()
    if kind == "bot":
        server, close = build_bot(settings)
    else:
        server, close = build_baseline(settings, deferred=kind == "bolt-default")
    time_application(server)
    import signal

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
