"""A lean load generator: signed Slack requests over raw asyncio sockets to 127.0.0.1.

Open loop (`open_loop`): requests leave on a fixed schedule whatever the answers do, each
timed from just before its connection is taken (or opened) to the last byte of the answer.
Closed loop (`closed_loop`): a fixed number of requests in flight, for throughput.
Keep-alive connections are reused when idle; a new one is opened whenever none is.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

HOST = "127.0.0.1"
PATH = "/slack/events"
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
TEAM = "T0TEST"
APP = "A0TEST"
TOKEN = "verification-token"


@dataclass(frozen=True)
class Request:
    """A Slack request body and its content type; signed when it is sent."""

    body: bytes
    content_type: str


@dataclass
class PhaseResult:
    """Latencies (s) of answered requests, by outcome."""

    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)  # exception name -> count
    elapsed_s: float = 0.0
    max_slip_s: float = 0.0  # how late the generator itself sent a request (it must be ~0)
    sent_at: list[float] = field(default_factory=list)  # unix time each request left (open loop)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


def sign(secret: bytes, body: bytes, timestamp: str) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def wire(request: Request, secret: bytes, port: int) -> bytes:
    """The HTTP/1.1 bytes of a request, signed now."""
    ts = str(int(time.time()))
    head = (f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: {request.content_type}\r\nContent-Length: {len(request.body)}\r\n"
            f"User-Agent: Slackbot 1.0 (+https://api.slack.com/robots)\r\n"
            f"X-Slack-Request-Timestamp: {ts}\r\n"
            f"X-Slack-Signature: {sign(secret, request.body, ts)}\r\n\r\n")
    return head.encode() + request.body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) after reading one whole response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


class _Client:
    """Keep-alive connections to one port; one request per connection at a time."""

    def __init__(self, port: int, secret: str, timeout: float) -> None:
        self.port = port
        self.secret = secret.encode()
        self.timeout = timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(self, request: Request, result: PhaseResult) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                if self.idle:
                    reader, writer = self.idle.pop()
                else:
                    reader, writer = await asyncio.open_connection(HOST, self.port)
                writer.write(wire(request, self.secret, self.port))
                await writer.drain()
                status, keep = await _read_response(reader)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            result.errors += 1
            kind = type(exc).__name__
            result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
            return
        result.latencies.append(time.perf_counter() - started)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _open_loop(port: int, secret: str, requests: Sequence[Request], rate: float,
                     timeout: float) -> PhaseResult:
    client, result = _Client(port, secret, timeout), PhaseResult()
    tasks = []
    start = time.perf_counter() + 0.02
    for i, request in enumerate(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result.max_slip_s = max(result.max_slip_s, time.perf_counter() - due)
        result.sent_at.append(time.time())
        tasks.append(asyncio.create_task(client.send(request, result)))
        result.sent += 1
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - start
    client.close()
    return result


async def _closed_loop(port: int, secret: str, requests: Sequence[Request], concurrency: int,
                       timeout: float) -> PhaseResult:
    client, result = _Client(port, secret, timeout), PhaseResult()
    queue = iter(requests)

    async def worker() -> None:
        for request in queue:
            result.sent += 1
            await client.send(request, result)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - start
    client.close()
    return result


def open_loop(port: int, secret: str, requests: Sequence[Request], rate: float,
              timeout: float = 15.0) -> PhaseResult:
    """Send `requests` at `rate` per second on schedule (bounded: one pass over the list)."""
    return asyncio.run(_open_loop(port, secret, requests, rate, timeout))


def closed_loop(port: int, secret: str, requests: Sequence[Request], concurrency: int,
                timeout: float = 30.0) -> PhaseResult:
    """Send `requests` with `concurrency` in flight; elapsed_s covers them all."""
    return asyncio.run(_closed_loop(port, secret, requests, concurrency, timeout))


# -- Slack payloads (shaped like tests/driver.py's) ----------------------------------------

_ts_counter = itertools.count(1)
_TS_BASE = int(time.time())


def new_ts() -> str:
    """A unique, increasing message ts ("1700000000.000100" style)."""
    micros = next(_ts_counter) * 100
    return f"{_TS_BASE + micros // 1_000_000}.{micros % 1_000_000:06d}"


def slash_command(text: str, *, channel_id: str, user_id: str, trigger_id: str,
                  response_url: str) -> Request:
    body = urlencode({
        "token": TOKEN, "team_id": TEAM, "team_domain": "fakeslack", "channel_id": channel_id,
        "channel_name": "bench", "user_id": user_id, "user_name": user_id.lower(),
        "command": "/incident", "text": text, "api_app_id": APP,
        "is_enterprise_install": "false", "response_url": response_url,
        "trigger_id": trigger_id,
    })
    return Request(body.encode(), FORM)


def button_click(action_id: str, value: str, *, channel_id: str, message_ts: str, user_id: str,
                 trigger_id: str, response_url: str) -> Request:
    user = {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": TEAM}
    payload = {
        "type": "block_actions", "user": user, "api_app_id": APP, "token": TOKEN,
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                      "is_ephemeral": False},
        "trigger_id": trigger_id, "team": {"id": TEAM, "domain": "fakeslack"},
        "enterprise": None, "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "bench"},
        "message": {"type": "message", "ts": message_ts, "text": "card"},
        "state": {"values": {}}, "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": "card", "type": "button",
                     "text": {"type": "plain_text", "text": "Assign role", "emoji": True},
                     "value": value, "action_ts": f"{time.time():.6f}"}],
    }
    return Request(urlencode({"payload": json.dumps(payload)}).encode(), FORM)


def message_event(channel: str, user: str, text: str) -> Request:
    ts = new_ts()
    event = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
             "event_ts": ts, "channel_type": "channel", "team": TEAM,
             "client_msg_id": str(uuid.uuid4())}
    envelope = {
        "token": TOKEN, "team_id": TEAM, "context_team_id": TEAM, "api_app_id": APP,
        "event": event, "type": "event_callback", "event_id": f"Ev{uuid.uuid4().hex[:10]}",
        "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": "UBOT",
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False, "event_context": f"4-message-{TEAM}-{channel}",
    }
    return Request(json.dumps(envelope).encode(), JSON_TYPE)
