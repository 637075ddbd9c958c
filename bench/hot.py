"""The cost of one message event inside the process, without HTTP: `python -m bench.hot`.

Signed message events for incident channels go straight into the WSGI application, one
after another in one thread, for the bot (`WsgiApp`, storing each message) and for the
baseline (the bare Bolt app of `bench/botproc.py`, which only acks). Prints microseconds
per event, best of three rounds, and the ratio; `--profile` prints the bot's cProfile
instead. This is the work behind the ingest figures of `bench.run`, without the server and
the load generator sharing the two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import itertools
import logging
import pstats
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench import load, seed
from bench.botproc import build_baseline
from incidentbot.config import Settings, load_settings
from incidentbot.server import WsgiApp, create_bot
from incidentbot.slack.blocks import ASSIGN_ROLE
from tests.fakeslack import FakeSlack

SECRET = "bench-hot-secret"
TOKEN = "xoxb-bench-hot"
USER = "UBENCHHOT"
CHANNELS = 50

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(request: load.Request) -> dict[str, Any]:
    """The WSGI environ waitress would build for this request, signed now."""
    ts = str(int(time.time()))
    return {
        "REQUEST_METHOD": "POST", "PATH_INFO": load.PATH, "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": load.HOST, "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
        "CONTENT_TYPE": request.content_type, "CONTENT_LENGTH": str(len(request.body)),
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": ts,
        "HTTP_X_SLACK_SIGNATURE": load.sign(SECRET.encode(), request.body, ts),
        "wsgi.input": io.BytesIO(request.body),
    }


def _ok(status: str, _headers: list[tuple[str, str]]) -> None:
    if not status.startswith("200"):
        raise RuntimeError(f"answered {status}")


def per_event_us(app: Wsgi, channels: Sequence[str], count: int,
                 kind: str = "message") -> float:
    """Microseconds per request (a message event, or a card button click), one after
    another."""
    make = {"click": _click, "command": _command}.get(kind, _message)
    environs = [environ_for(make(channels[i % len(channels)], i)) for i in range(count)]
    started = time.perf_counter()
    for environ in environs:
        b"".join(app(environ, _ok))
    return (time.perf_counter() - started) / count * 1e6


def _message(channel: str, index: int) -> load.Request:
    return load.message_event(channel, USER, f"m {index}")


_triggers = itertools.count()


def _click(channel: str, _index: int) -> load.Request:
    """A card button click (its work, opening a modal, is stored and left to a worker)."""
    n = next(_triggers)
    return load.button_click(ASSIGN_ROLE, "1", channel_id=channel,
                             message_ts="1700000000.000001", user_id=USER,
                             trigger_id=f"hot-trigger-{n}",
                             response_url=f"https://hooks.slack.test/hot/{n}")


def _command(channel: str, _index: int) -> load.Request:
    """`/incident update` in an incident channel (its work, opening a modal, is stored)."""
    n = next(_triggers)
    return load.slash_command("update", channel_id=channel, user_id=USER,
                              trigger_id=f"hot-trigger-{n}",
                              response_url=f"https://hooks.slack.test/hot/{n}")


def settings_for(url: str, fake: FakeSlack) -> Settings:
    return load_settings(
        slack_bot_token=TOKEN, slack_signing_secret=SECRET, slack_app_token="",
        slack_api_url=fake.api_url, database_url=url, host="127.0.0.1", port=0,
        broadcast_channel="", log_level="WARNING")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--kind", choices=("message", "click", "command"), default="message",
                        help="click, command (`/incident update`): the bot stores each "
                             "request's work in the inbox for a worker process, as app.py's "
                             "serving process does")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakeSlack(bot_token=TOKEN))
        fake.add_user(USER, "hot")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(seed.fresh_database(args.database, workdir))
        channels = [{"id": f"CHOT{i:05d}", "card_ts": f"1700000000.{i:06d}"}
                    for i in range(CHANNELS)]
        seed.seed_incidents(url, channels, ic=USER, due_at=[None] * CHANNELS)
        ids = [channel["id"] for channel in channels]
        settings = settings_for(url, fake)
        # a serving process whose worker is elsewhere (no worker runs here)
        bot = create_bot(settings, role="front", wake=threading.Event(), worker="hot:0/0")
        stack.callback(bot.close)
        app = WsgiApp(bot)
        per_event_us(app, ids, 200, args.kind)  # warm: caches, prepared statements
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(per_event_us, app, ids, args.events, args.kind)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
            return 0
        bot_us = min(per_event_us(app, ids, args.events, args.kind) for _ in range(3))
        server, _close = build_baseline(settings)
        stack.callback(server.close)
        baseline = server.application
        per_event_us(baseline, ids, 200, args.kind)
        base_us = min(per_event_us(baseline, ids, args.events, args.kind) for _ in range(3))
    what = {"message": ("message event", "message stored before the answer"),
            "click": ("card button click", "click's work stored (spooled)"),
            "command": ("`/incident update`", "command's work stored (spooled)")}[args.kind]
    print(f"| target ({args.database}) | µs per {what[0]} | ratio |")
    print("|---|---:|---:|")
    print(f"| baseline (Bolt, ack only) | {base_us:.0f} | 1.00 |")
    print(f"| bot ({what[1]}) | {bot_us:.0f} | {bot_us / base_us:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
