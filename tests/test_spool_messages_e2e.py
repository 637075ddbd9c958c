"""SQLite with a worker process (`app.py`): channel messages go through the serving process's
spool into the timeline. A deletion or a key-event reaction that comes before its message is
moved waits for the move, or is answered 503 (Slack redelivers it) while the worker is
frozen; Slack's retries store nothing twice and a replay is refused."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from incidentbot.models import TimelineEvent
from incidentbot.spool import ROW_TYPE, decode
from tests.conftest import ALICE, BOB, BOT_TOKEN, SIGNING_SECRET
from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack
from tests.helpers import declared_channel, eventually
from tests.process import BotProcess, bot_env
from tests.test_inbox_e2e import children_of


class Channel:
    """A bot process and its incident's channel, with the driver that plays Slack."""

    def __init__(self, bot: BotProcess, driver: SlackDriver, channel: str, engine: Engine,
                 spool_dir: Path) -> None:
        self.bot, self.driver, self.channel = bot, driver, channel
        self.engine, self.spool_dir = engine, spool_dir

    def worker(self) -> int:
        assert self.bot.proc is not None
        [pid] = eventually(lambda: children_of(self.bot.proc.pid))  # type: ignore[union-attr]
        return pid

    def message(self, text: str) -> tuple[str, int]:
        event = self.driver.message_event(self.channel, BOB, text)
        return event["ts"], self.driver.event(event).status

    def row(self, ts: str) -> TimelineEvent | None:
        with Session(self.engine) as session:
            return session.scalar(select(TimelineEvent).where(
                TimelineEvent.kind == "message", TimelineEvent.slack_ts == ts))

    def messages(self) -> list[str]:
        with Session(self.engine) as session:
            return list(session.scalars(select(TimelineEvent.text).where(
                TimelineEvent.kind == "message").order_by(TimelineEvent.id)))

    def spooled_rows(self) -> int:
        return sum(1 for path in self.spool_dir.glob("incidentbot-inbox.db-spool-*")
                   for record in decode(path.read_bytes())[0]
                   if record.content_type.startswith(ROW_TYPE))


@pytest.fixture
def incident_channel(tmp_path: Path) -> Iterator[Channel]:
    database_url = f"sqlite:///{tmp_path / 'incidentbot.db'}"
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.add_user(ALICE, "alice")
        fake.add_user(BOB, "bob")
        bot = BotProcess(bot_env(fake.api_url, database_url)).start()
        engine = create_engine(database_url)
        try:
            driver = SlackDriver(f"{bot.url}/slack/events", SIGNING_SECRET, fake)
            channel = declared_channel(driver, "Spooled talk", ALICE)
            yield Channel(bot, driver, channel, engine, tmp_path)
        finally:
            bot.stop()
            engine.dispose()


def test_messages_reach_the_timeline_through_the_spool_once(incident_channel: Channel) -> None:
    room = incident_channel
    time.sleep(0.3)  # the declaration's work done: the worker holds no write turn
    worker = room.worker()
    os.kill(worker, signal.SIGSTOP)
    try:
        sent = [room.message(f"spooled {i}") for i in range(5)]
        assert [status for _ts, status in sent] == [200] * 5
        assert room.driver.retry_last_event().status == 200  # Slack's retry: answered ...
        assert room.spooled_rows() == 5  # ... and not spooled again
        assert room.messages() == []  # in the spool, not yet in the timeline
        again = room.driver.event(room.driver.message_event(room.channel, BOB, "spooled 4",
                                                            ts=sent[-1][0]))
        assert again.status == 401  # the same message without Slack's retry header: a replay
        assert room.spooled_rows() == 5
    finally:
        os.kill(worker, signal.SIGCONT)
    eventually(lambda: room.messages() == [f"spooled {i}" for i in range(5)] or None)


def test_a_deletion_waits_for_its_message_or_is_redelivered(incident_channel: Channel) -> None:
    room = incident_channel
    ts, status = room.message("a message moved at once")
    assert status == 200
    eventually(lambda: room.row(ts))
    time.sleep(0.3)  # the worker is idle, holding no write turn, when it is frozen
    worker = room.worker()
    os.kill(worker, signal.SIGSTOP)
    try:
        late_ts, status = room.message("deleted before it is moved")
        assert status == 200
        deletion = room.driver.event(room.driver.message_deleted_event(room.channel, late_ts))
        assert deletion.status == 503  # the worker is frozen: Slack delivers it again later
        assert room.row(late_ts) is None
    finally:
        os.kill(worker, signal.SIGCONT)
    assert room.driver.retry_last_event().status == 200
    stored = room.row(late_ts)
    assert stored is not None and stored.deleted_at is not None
    pinned_ts, status = room.message("pinned as soon as it is said")
    assert status == 200
    pin = room.driver.reaction_event("reaction_added", ALICE, "pushpin", room.channel, pinned_ts)
    assert room.driver.event(pin).status == 200  # waited for the move, then marked
    pinned = room.row(pinned_ts)
    assert pinned is not None and pinned.is_key
    first = room.row(ts)
    assert first is not None and first.deleted_at is None and not first.is_key
