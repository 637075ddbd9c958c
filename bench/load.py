"""Signed Slack requests over raw asyncio sockets to the bot on 127.0.0.1.

The payloads are tests/driver.py's. A request is built (`Maker`) the moment it leaves, so its
trigger id is minted then. Latency runs from taking a connection (a kept-alive one when idle)
to the last byte of the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tests.driver import SlackDriver
from tests.fakeslack import NotFound

FORM = "application/x-www-form-urlencoded"
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


class _Pointers:
    """What `SlackDriver` asks of its FakeSlack: trigger ids minted now and response URLs, both
    valid at the bench's fake Slack (bench/fake.py), and no lookups."""

    bot_user_id = "UBOT"

    def __init__(self, url: str) -> None:
        self.url = url

    def mint_trigger_id(self, user_id: str | None = None) -> str:
        return f"bench.{time.time():.6f}.{next(_seq)}"

    def new_response_url(self, **_: Any) -> str:
        return f"{self.url}/response/bench{next(_seq)}"

    def new_ts(self) -> str:
        return f"{int(time.time())}.{next(_seq) % 1_000_000:06d}"

    def api_message(self, *_: Any) -> None:
        return None

    def user(self, *_: Any, **__: Any) -> None:
        raise NotFound("not kept")

    channel = add_message = user


class Slack(SlackDriver):
    """tests/driver.py's requests, shaped like Slack's, kept to be sent later by `send`."""

    def __init__(self, fake_url: str) -> None:
        super().__init__("", "", _Pointers(fake_url))  # type: ignore[arg-type]

    def send(self, body: str, *, content_type: str = FORM,  # type: ignore[override]
             **_: Any) -> Request:
        return Request("", body.encode(), content_type, trigger=self.last_trigger_id)

    def message(self, channel: str, user: str, text: str) -> Request:
        return replace(self.event(self.message_event(channel, user, text)), kind="message",
                       trigger=None)

    def click(self, action_id: str, value: str, channel: str, ts: str, user: str) -> Request:
        return replace(self.block_action(action_id, user_id=user, channel_id=channel,
                                         message_ts=ts, value=value), kind="click")

    def slash(self, text: str, channel: str, user: str) -> Request:
        return replace(self.command(text, user_id=user, channel_id=channel),
                       kind=f"/incident {text.split()[0]}")


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
