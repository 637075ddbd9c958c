"""Socket Mode end to end: the bot connects to a fake Socket Mode server (RFC 6455 on loopback)
found through the fake Slack's `apps.connections.open`, and answers envelopes on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from incidentbot.models import Incident, TimelineEvent
from incidentbot.server import Bot, create_bot, serve_socket_mode
from tests.conftest import ALICE, make_settings
from tests.fakeslack import FakeSlack
from tests.fakesocket import APP_TOKEN, FakeSocketMode, SocketDriver
from tests.helpers import declared_channel, eventually
from tests.process import BotProcess, bot_env

pytestmark = pytest.mark.timeout(60)


@dataclass
class SocketBot:
    bot: Bot
    sock: FakeSocketMode
    driver: SocketDriver
    fake: FakeSlack

    def session(self) -> Session:
        return Session(self.bot.engine)


@pytest.fixture
def socket_mode(fake: FakeSlack) -> Iterator[FakeSocketMode]:
    with FakeSocketMode() as sock:
        fake.set_socket_mode(lambda: sock.url, APP_TOKEN)
        yield sock


@pytest.fixture
def socket_bot(fake: FakeSlack, socket_mode: FakeSocketMode, database_url: str,
               bot_settings: dict[str, object]) -> Iterator[SocketBot]:
    """The real bot in Socket Mode (in this process), connected to the fake, on each
    database; `bot_settings` overrides settings as for the HTTP `running` bot."""
    settings = make_settings(database_url, fake, slack_app_token=APP_TOKEN, port=0,
                             **bot_settings)
    bot = create_bot(settings)
    stop = threading.Event()
    thread = threading.Thread(target=serve_socket_mode, args=(bot, stop), daemon=True)
    thread.start()
    socket_mode.wait_connections(1)
    eventually(lambda: bot.socket is not None and bot.socket.is_connected())
    driver = SocketDriver(socket_mode, fake, timeout=5.0)
    yield SocketBot(bot, socket_mode, driver, fake)
    stop.set()
    thread.join(timeout=10)
    bot.close()
    assert not thread.is_alive(), "serve_socket_mode did not return after stop"
    assert socket_mode.open_connections == 0, "the socket was not closed at shutdown"
    slowest = max(driver.latencies, default=0.0)
    assert slowest < 3.0, f"an envelope took {slowest:.2f}s to be acknowledged"


def test_command_event_and_button_over_socket_mode(socket_bot: SocketBot) -> None:
    driver, fake = socket_bot.driver, socket_bot.fake
    channel = declared_channel(driver, "Socket checkout down", ALICE)
    assert driver.last_ack is not None and driver.last_ack.latency_s < 3.0

    event = driver.message_event(channel, ALICE, "payments look fine from here")
    driver.event(event)
    assert driver.last_ack is not None and driver.last_ack.payload is None

    def stored() -> bool:
        with socket_bot.session() as session:
            texts = session.scalars(select(TimelineEvent.text)).all()
        return "payments look fine from here" in texts

    eventually(stored)

    with socket_bot.session() as session:
        incident = session.scalars(select(Incident)).one()
        card_ts = incident.card_ts
        incident_id = incident.id
    assert card_ts
    opened_before = len(fake.calls_to("views.open"))
    driver.block_action("card_post_update", user_id=ALICE, channel_id=channel,
                        message_ts=card_ts, value=str(incident_id))
    eventually(lambda: len(fake.calls_to("views.open")) > opened_before)


def test_envelope_on_the_new_socket_after_refresh_is_acked_fast(socket_bot: SocketBot) -> None:
    sock, driver = socket_bot.sock, socket_bot.driver
    for round_ in range(2):
        before = sock.connections
        sock.refresh()
        sock.wait_connections(before + 1, timeout=5)
        response = driver.command("help", user_id=ALICE, channel_id="CGENERAL")
        assert driver.last_ack is not None
        assert driver.last_ack.connection == before + 1, "acked on the old socket"
        assert response.latency_s < 1.0, f"round {round_}: ack after {response.latency_s:.2f}s"


def test_reconnects_and_answers_after_an_abrupt_close(socket_bot: SocketBot) -> None:
    sock, driver = socket_bot.sock, socket_bot.driver
    before = sock.connections
    dropped = time.monotonic()
    sock.drop()
    sock.wait_connections(before + 1, timeout=10)
    driver.command("help", user_id=ALICE, channel_id="CGENERAL")
    assert time.monotonic() - dropped < 10.0
    eventually(lambda: socket_bot.bot.socket.is_connected())


def test_refused_app_token_says_one_sentence_and_exits_2(
        fake: FakeSlack, socket_mode: FakeSocketMode, tmp_path: Path) -> None:
    env = bot_env(fake.api_url, f"sqlite:///{tmp_path / 'refused.db'}",
                  slack_app_token="xapp-1-A0TEST-1-wrong")
    bot = BotProcess(env).start(wait=False)
    assert bot.proc is not None
    code = bot.proc.wait(timeout=30)
    output = bot.output()
    assert code == 2, output
    assert "Traceback" not in output
    assert " ERROR " not in output, output
    said = [line for line in output.splitlines() if "SLACK_APP_TOKEN" in line]
    assert len(said) == 1 and "invalid_auth" in said[0], output
    assert said[0].startswith("incidentbot cannot start:") and said[0].count(". ") == 0
    assert socket_mode.connections == 0


@pytest.mark.parametrize("bot_settings", [{"http_listener": False}])
def test_the_http_listener_can_be_turned_off(socket_bot: SocketBot) -> None:
    assert socket_bot.bot.http_port is None
    assert declared_channel(socket_bot.driver, "Listener off", ALICE)
