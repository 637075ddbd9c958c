"""Slack's Socket Mode side on loopback: a WebSocket (RFC 6455) server that behaves like Slack.

`FakeSocketMode` runs a `websockets` server on 127.0.0.1 in its own thread and event loop. On
every connection it sends `hello`; the test sends envelopes (`slash_commands`, `interactive`,
`events_api`) on the newest connection, and the fake records each ack matched by
`envelope_id`, with its payload and its latency. It can ask the client to reconnect
(`disconnect` with `refresh_requested`, as Slack does every few hours), drop a connection
without a close frame, or refuse new connections for a while.

`SocketDriver` is `tests.driver.SlackDriver` with Socket Mode as its transport: the same
payload builders, but the request becomes an envelope and the answer is the ack.

`FakeSlack.set_socket_mode(url, app_token)` makes `apps.connections.open` return this
server's URL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.driver import DriverResponse, SlackDriver
from tests.fakeslack import JSON, FakeSlack

APP_TOKEN = "xapp-1-A0TEST-1-test"


@dataclass
class Ack:
    """The client's answer to one envelope."""

    envelope_id: str
    payload: JSON | None
    latency_s: float
    connection: int  # which connection (1, 2, …) the ack came on


@dataclass
class _Link:
    number: int
    ws: ServerConnection
    opened_at: float
    closed_at: float | None = None
    received: list[JSON] = field(default_factory=list)


class FakeSocketMode:
    """A Socket Mode endpoint on 127.0.0.1 (port chosen by the OS)."""

    def __init__(self, app_id: str = "A0TEST") -> None:
        self.app_id = app_id
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._cond = threading.Condition()
        self._links: list[_Link] = []
        self._numbers = itertools.count(1)
        self._sent: dict[str, tuple[float, int]] = {}  # envelope_id -> (sent at, connection)
        self.acks: dict[str, Ack] = {}
        self.refusing = False
        self.refused = 0  # handshakes refused while `refusing`
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeSocketMode:
        ready = threading.Event()

        async def boot() -> None:
            self._server = await serve(self._session, "127.0.0.1", 0,
                                       process_request=self._admit, ping_interval=None)
            self.port = self._server.sockets[0].getsockname()[1]

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(boot())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fakesocket", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fake Socket Mode server did not start")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        self._call(shutdown(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """What `apps.connections.open` answers (a fresh ticket each time, like Slack)."""
        return f"ws://127.0.0.1:{self.port}/link/?ticket={uuid.uuid4()}&app_id={self.app_id}"

    # -- the server side -----------------------------------------------------------------------

    def _admit(self, connection: ServerConnection, request: Any) -> Any:
        if self.refusing:
            with self._cond:
                self.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try again later\n")
        return None

    async def _session(self, ws: ServerConnection) -> None:
        with self._cond:
            link = _Link(next(self._numbers), ws, time.monotonic())
            self._links.append(link)
            open_links = sum(1 for one in self._links if one.closed_at is None)
            self._cond.notify_all()
        try:
            await ws.send(json.dumps({
                "type": "hello", "num_connections": open_links,
                "debug_info": {"host": "applink-fake", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id}}))
            async for raw in ws:
                self._received(link, raw)
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                link.closed_at = time.monotonic()
                self._cond.notify_all()

    def _received(self, link: _Link, raw: str | bytes) -> None:
        now = time.monotonic()
        try:
            message = json.loads(raw)
        except ValueError:
            message = {"unparsed": str(raw)}
        with self._cond:
            link.received.append(message)
            envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
            if envelope_id in self._sent and envelope_id not in self.acks:
                sent_at, _ = self._sent[envelope_id]
                self.acks[envelope_id] = Ack(envelope_id, message.get("payload"),
                                             now - sent_at, link.number)
            self._cond.notify_all()

    def _call(self, coro: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _newest(self) -> _Link:
        with self._cond:
            for link in reversed(self._links):
                if link.closed_at is None:
                    return link
        raise AssertionError("no open Socket Mode connection")

    # -- what a test does ----------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """How many connections were ever opened."""
        with self._cond:
            return len(self._links)

    @property
    def open_connections(self) -> int:
        with self._cond:
            return sum(1 for link in self._links if link.closed_at is None)

    def wait_connections(self, count: int, timeout: float = 10.0) -> float:
        """Wait until `count` connections were ever opened; the time waited."""
        started = time.monotonic()
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._links) >= count, timeout):
                raise TimeoutError(f"{len(self._links)} connection(s) after {timeout}s, "
                                   f"wanted {count}")
        return time.monotonic() - started

    def send(self, kind: str, payload: JSON, *, accepts_response_payload: bool = False,
             retry_attempt: int = 0, retry_reason: str = "") -> str:
        """Send one envelope on the newest open connection; its `envelope_id`."""
        envelope_id = str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                    "accepts_response_payload": accepts_response_payload,
                    "retry_attempt": retry_attempt, "retry_reason": retry_reason}
        link = self._newest()
        with self._cond:
            self._sent[envelope_id] = (time.monotonic(), link.number)
        self._call(link.ws.send(json.dumps(envelope)))
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 10.0) -> Ack:
        with self._cond:
            if not self._cond.wait_for(lambda: envelope_id in self.acks, timeout):
                raise TimeoutError(f"envelope {envelope_id} not acknowledged in {timeout}s")
            return self.acks[envelope_id]

    def refresh(self) -> None:
        """Slack's routine `disconnect` (`refresh_requested`) on the newest connection; like
        Slack, the old connection is closed (with a close frame) a few seconds later if the
        client keeps it."""
        link = self._newest()
        self._call(link.ws.send(json.dumps({
            "type": "disconnect", "reason": "refresh_requested",
            "debug_info": {"host": "applink-fake"}})))

        async def close_later() -> None:
            await asyncio.sleep(5)
            await link.ws.close()

        asyncio.run_coroutine_threadsafe(close_later(), self._loop)

    def drop(self) -> None:
        """End the newest connection's TCP stream without a close frame."""
        link = self._newest()

        async def abort() -> None:
            link.ws.transport.abort()

        self._call(abort())

    def received(self, connection: int | None = None) -> list[JSON]:
        """Messages the client sent (on one connection, or on all)."""
        with self._cond:
            return [message for link in self._links
                    if connection in (None, link.number) for message in link.received]


# ---------------------------------------------------------------------------------------------
# The driver over Socket Mode
# ---------------------------------------------------------------------------------------------


class SocketDriver(SlackDriver):
    """`SlackDriver` whose requests travel as Socket Mode envelopes; the answer is the ack.

    A form body with `payload` becomes an `interactive` envelope, another form body a
    `slash_commands` one, a JSON body an `events_api` one (with `accepts_response_payload`
    as Slack sets it).
    """

    def __init__(self, socket_mode: FakeSocketMode, fake: FakeSlack, **kwargs: Any) -> None:
        super().__init__("socket-mode://", "", fake, **kwargs)
        self.socket_mode = socket_mode
        self.last_ack: Ack | None = None

    def send(self, body: str, *, content_type: str = "application/x-www-form-urlencoded",
             headers: Mapping[str, str] | None = None, **_signing: Any) -> DriverResponse:
        retry = {k.lower(): v for k, v in (headers or {}).items()}
        retry_attempt = int(retry.get("x-slack-retry-num", 0))
        retry_reason = retry.get("x-slack-retry-reason", "")
        if content_type.startswith("application/json"):
            kind, payload, accepts = "events_api", json.loads(body), False
        else:
            form = dict(parse_qsl(body, keep_blank_values=True))
            if "payload" in form:
                kind, payload, accepts = "interactive", json.loads(form["payload"]), True
            else:
                kind, payload, accepts = "slash_commands", form, True
        envelope_id = self.socket_mode.send(kind, payload, accepts_response_payload=accepts,
                                            retry_attempt=retry_attempt,
                                            retry_reason=retry_reason)
        ack = self.socket_mode.wait_ack(envelope_id, timeout=self.timeout)
        self.last_ack = ack
        self.latencies.append(ack.latency_s)
        answer = "" if ack.payload is None else json.dumps(ack.payload)
        return DriverResponse(status=200, body=answer, latency_s=ack.latency_s, headers={})
