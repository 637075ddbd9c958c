"""Signed Slack requests over raw asyncio sockets to the bot on 127.0.0.1.

A request is built (`Maker`) the moment it leaves, so its trigger id is minted then. Latency
runs from taking a connection (a kept-alive one when idle) to the last byte of the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

TEAM, APP, TOKEN, FORM = "T0TEST", "A0TEST", "vtoken", "application/x-www-form-urlencoded"
_seq = itertools.count(1)


@dataclass(frozen=True)
class Request:
    kind: str
    body: bytes
    content_type: str = FORM
    trigger: str | None = None
    headers: str = ""


@dataclass
class Sent:
    kind: str
    at: float  # unix time it left
    trigger: str | None
    latency: float | None = None  # None: no answer
    status: int = 0
    error: str = ""


Maker = Callable[[], Request]


def _pointers(fake_url: str) -> tuple[str, str]:
    """A trigger id minted now and a response URL, both valid at the fake Slack."""
    n = next(_seq)
    return f"bench.{time.time():.6f}.{n}", f"{fake_url}/response/bench{n}"


def command(fake_url: str, text: str, channel: str, user: str) -> Request:
    trigger, url = _pointers(fake_url)
    body = urlencode({
        "token": TOKEN, "team_id": TEAM, "team_domain": "fakeslack", "channel_id": channel,
        "channel_name": "bench", "user_id": user, "user_name": user.lower(),
        "command": "/incident", "text": text, "api_app_id": APP,
        "is_enterprise_install": "false", "response_url": url, "trigger_id": trigger})
    return Request(f"/incident {text.split()[0]}", body.encode(), trigger=trigger)


def click(fake_url: str, action_id: str, value: str, channel: str, message_ts: str,
          user: str) -> Request:
    """A `block_actions` click on a button of a message."""
    trigger, url = _pointers(fake_url)
    payload = {
        "type": "block_actions", "api_app_id": APP, "token": TOKEN, "trigger_id": trigger,
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                      "is_ephemeral": False},
        "team": {"id": TEAM, "domain": "fakeslack"}, "enterprise": None,
        "is_enterprise_install": False, "channel": {"id": channel, "name": "bench"},
        "message": {"type": "message", "ts": message_ts, "text": "card"},
        "state": {"values": {}}, "response_url": url,
        "actions": [{"action_id": action_id, "block_id": "card_actions", "type": "button",
                     "text": {"type": "plain_text", "text": "Post update"}, "value": value,
                     "action_ts": f"{time.time():.6f}"}]}
    return Request("click", urlencode({"payload": json.dumps(payload)}).encode(),
                   trigger=trigger)


def message(channel: str, user: str, text: str) -> Request:
    """A `message` event in an Events API envelope (unique ts and event_id)."""
    ts = f"{time.time():.0f}.{next(_seq) % 1_000_000:06d}"
    event = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
             "event_ts": ts, "channel_type": "channel", "team": TEAM,
             "client_msg_id": str(uuid.uuid4())}
    envelope = {"token": TOKEN, "team_id": TEAM, "api_app_id": APP, "event": event,
                "type": "event_callback", "event_id": f"Ev{uuid.uuid4().hex[:12].upper()}",
                "event_time": int(time.time()), "is_ext_shared_channel": False,
                "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": "UBOT",
                                    "is_bot": True, "is_enterprise_install": False}]}
    return Request("message", json.dumps(envelope).encode(), "application/json")


def retry(request: Request) -> Request:
    """Slack redelivering an event it thinks went unanswered: same body, signed anew."""
    return Request("retry", request.body, request.content_type,
                   headers="X-Slack-Retry-Num: 1\r\nX-Slack-Retry-Reason: http_timeout\r\n")


def _wire(request: Request, secret: bytes) -> bytes:
    ts = str(int(time.time()))
    signature = hmac.new(secret, f"v0:{ts}:".encode() + request.body, hashlib.sha256)
    return (f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            f"{request.content_type}\r\nContent-Length: {len(request.body)}\r\n"
            f"X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: v0={signature.hexdigest()}"
            f"\r\n{request.headers}\r\n").encode() + request.body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) after reading one whole response."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip().lower()
               for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readexactly(2)
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers.get("connection") != "close"


async def _run(port: int, secret: bytes, makers: Sequence[Maker], rate: float | None,
               concurrency: int, timeout: float) -> list[Sent]:
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    out: list[Sent] = []

    async def send(make: Maker) -> None:
        started, request = time.perf_counter(), make()
        out.append(sent := Sent(request.kind, time.time(), request.trigger))
        try:
            async with asyncio.timeout(timeout):
                reader, writer = idle.pop() if idle else await asyncio.open_connection(
                    "127.0.0.1", port)
                writer.write(_wire(request, secret))
                await writer.drain()
                sent.status, keep = await _answer(reader)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            sent.error = type(exc).__name__
            return
        sent.latency = time.perf_counter() - started
        idle.append((reader, writer)) if keep else writer.close()

    if rate:  # open loop: each request leaves on schedule, whatever the answers do
        tasks, start = [], time.perf_counter() + 0.05
        for i, make in enumerate(makers):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(send(make)))
        await asyncio.gather(*tasks)
    else:  # closed loop: `concurrency` requests in flight
        queue = iter(makers)

        async def worker() -> None:
            for make in queue:
                await send(make)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    for _, writer in idle:
        writer.close()
    return out


def send(port: int, secret: str, makers: Sequence[Maker], *, rate: float | None = None,
         concurrency: int = 1, timeout: float = 30.0) -> list[Sent]:
    """Send every request, open loop at `rate`/s or else `concurrency` at a time; the
    results are in the order sent."""
    return asyncio.run(_run(port, secret.encode(), makers, rate, concurrency, timeout))
