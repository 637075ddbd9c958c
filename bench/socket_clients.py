"""Compare Socket Mode clients against the fake Socket Mode server.

`python -m bench.socket_clients [builtin] [websocket-client] [incidentbot]`

For each client (Bolt's adapter on slack_sdk's built-in client, on `websocket-client`, and the
configuration incidentbot uses) and a minimal Bolt app that acks `/incident`:

- ack: latency of an envelope on a settled connection;
- refresh: latency of an envelope sent on the new socket as soon as it opens after Slack's
  `disconnect` (`refresh_requested`);
- drop: time from a dropped TCP stream (no close frame) to the new connection, and to the ack of
  an envelope sent on it; CPU used (share of one core) over the 10 s after the drop;
- down: CPU while Slack refuses every new connection for 10 s;
- close: time `close()` takes, and whether the server saw a close frame.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from tests.fakeslack import FakeSlack
from tests.fakesocket import APP_TOKEN, FakeSocketMode

BOT_TOKEN = "xoxb-bench"
COMMAND = {"token": "t", "team_id": "T0TEST", "team_domain": "fakeslack", "channel_id": "C1",
           "channel_name": "general", "user_id": "U1", "user_name": "u", "command": "/incident",
           "text": "help", "api_app_id": "A0TEST", "is_enterprise_install": "false",
           "response_url": "https://example.invalid/r", "trigger_id": "1.2.3"}


def builtin(app: App) -> Any:
    from slack_bolt.adapter.socket_mode.builtin import SocketModeHandler

    return SocketModeHandler(app, APP_TOKEN)


def websocket_client(app: App) -> Any:
    from slack_bolt.adapter.socket_mode.websocket_client import SocketModeHandler

    return SocketModeHandler(app, APP_TOKEN)


def incidentbot_client(app: App) -> Any:
    import os

    from incidentbot.server import socket_mode_handler

    return socket_mode_handler(app, APP_TOKEN, float(os.environ.get("SOCKET_PING", 3)))


CLIENTS: dict[str, Callable[[App], Any]] = {
    "builtin": builtin, "websocket-client": websocket_client, "incidentbot": incidentbot_client}


def make_app(api_url: str) -> App:
    app = App(client=WebClient(token=BOT_TOKEN, base_url=api_url),
              request_verification_enabled=False, token_verification_enabled=False,
              process_before_response=True)
    app.command("/incident")(lambda ack: ack())
    return app


def cpu_share(seconds: float, during: Callable[[], None] = lambda: None) -> float:
    cpu, wall = time.process_time(), time.monotonic()
    during()
    time.sleep(max(0.0, seconds - (time.monotonic() - wall)))
    return (time.process_time() - cpu) / (time.monotonic() - wall)


def measure(name: str, window: float) -> dict[str, str]:
    fake = FakeSlack(bot_token=BOT_TOKEN).start()
    sock = FakeSocketMode().start()
    fake.set_socket_mode(lambda: sock.url, APP_TOKEN)
    handler = CLIENTS[name](make_app(fake.api_url))
    row: dict[str, str] = {"client": name}
    try:
        handler.connect()
        sock.wait_connections(1)
        time.sleep(0.5)
        row["ack"] = f"{sock.wait_ack(sock.send('slash_commands', COMMAND)).latency_s:.3f}s"

        sock.refresh()
        sock.wait_connections(2)
        ack = sock.wait_ack(sock.send("slash_commands", COMMAND), timeout=30)
        row["refresh ack"] = f"{ack.latency_s:.3f}s"
        time.sleep(6)  # the old connection is closed by the fake after 5 s

        before = sock.connections
        dropped = time.monotonic()
        box: dict[str, float] = {}

        def drop_and_wait() -> None:
            sock.drop()
            try:
                box["reconnect"] = sock.wait_connections(before + 1, timeout=window)
                ack = sock.wait_ack(sock.send("slash_commands", COMMAND), timeout=window)
                box["answer"] = time.monotonic() - dropped
                box["ack"] = ack.latency_s
            except TimeoutError:
                pass

        share = cpu_share(window, drop_and_wait)
        row["drop→connected"] = f"{box['reconnect']:.2f}s" if "reconnect" in box else "> window"
        row["drop→answered"] = f"{box['answer']:.2f}s" if "answer" in box else "> window"
        row["CPU after drop"] = f"{share:.0%}"

        if "reconnect" not in box:  # still deaf: how long for?
            try:
                sock.wait_connections(before + 1, timeout=120)
                row["drop→connected"] = f"{time.monotonic() - dropped:.2f}s"
            except TimeoutError:
                row["drop→connected"] = "> 120s"
        time.sleep(1)
        sock.refusing = True
        before = sock.connections
        share = cpu_share(window, sock.drop)
        row["CPU while down"] = f"{share:.0%}"
        row["retries while down"] = str(sock.refused)
        sock.refusing = False
        try:
            waited = sock.wait_connections(before + 1, timeout=window)
            row["back after down"] = f"{waited:.2f}s"
        except TimeoutError:
            row["back after down"] = "> window"
    finally:
        started = time.monotonic()
        handler.close()
        row["close"] = f"{time.monotonic() - started:.2f}s"
        time.sleep(0.5)
        row["open after close"] = str(sock.open_connections)
        row["threads left"] = str(threading.active_count())
        sock.stop()
        fake.stop()
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clients", nargs="*", default=list(CLIENTS))
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL if not args.verbose else logging.DEBUG)
    rows = [measure(name, args.window) for name in args.clients]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row.get(column, "") for column in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
