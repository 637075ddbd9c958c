"""SIGKILL in the middle of a busy incident (messages flowing, a reminder due), then a
restart: no acknowledged message is lost, no reminder is skipped or doubled, the card is
consistent with the database."""

from __future__ import annotations

import signal
import threading
import time

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from incidentbot.models import Incident, TimelineEvent
from tests.conftest import ALICE, BOB, BOT_TOKEN, SIGNING_SECRET
from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack
from tests.helpers import declared_channel, eventually
from tests.process import BotProcess, bot_env

INTERVAL_MIN = 0.04  # 2.4 s between reminders
MESSAGES = 150


class Sender:
    """Plays Slack: delivers messages, and redelivers the ones not acknowledged."""

    def __init__(self, driver: SlackDriver, channel: str) -> None:
        self.driver = driver
        self.channel = channel
        self.acked: set[int] = set()
        self.stop = threading.Event()

    def deliver(self, i: int, retry: int = 0) -> None:
        event = self.driver.message_event(self.channel, BOB, f"busy {i:03d}",
                                          ts=f"{1_900_000_000 + i}.000100")
        headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_error"} \
            if retry else None
        try:
            response = self.driver.event(event, event_id=f"Ev{i:06d}", headers=headers)
        except OSError:
            return
        if response.status == 200:
            self.acked.add(i)

    def run(self) -> None:
        for i in range(MESSAGES):
            if self.stop.is_set():
                return
            self.deliver(i)
            time.sleep(0.01)

    def redeliver_missing(self) -> None:
        for i in range(MESSAGES):
            if i not in self.acked:
                self.deliver(i, retry=1)


def test_sigkill_mid_incident_loses_nothing(database_url: str) -> None:
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.add_user(ALICE, "alice")
        fake.add_user(BOB, "bob")
        bot = BotProcess(bot_env(fake.api_url, database_url,
                                 reminder_sev3_minutes=INTERVAL_MIN)).start()
        try:
            driver = SlackDriver(f"{bot.url}/slack/events", SIGNING_SECRET, fake)
            channel = declared_channel(driver, "Crash drill", ALICE)
            sender = Sender(driver, channel)
            flow = threading.Thread(target=sender.run)
            flow.start()
            time.sleep(INTERVAL_MIN * 60 + 0.3)  # a reminder has come due
            bot.stop(signal.SIGKILL)
            time.sleep(INTERVAL_MIN * 60)  # another falls due while the bot is dead
            bot.start()
            flow.join(timeout=60)
            sender.redeliver_missing()  # Slack's retries of what was never acknowledged
            engine = create_engine(database_url)
            time.sleep(1.5)

            def settled() -> tuple[Incident, list[str], list[TimelineEvent]]:
                """Once every claimed reminder is confirmed posted (none left in flight)."""
                with Session(engine) as session:
                    incident = session.scalars(select(Incident)).one()
                    stored = list(session.scalars(select(TimelineEvent.text).where(
                        TimelineEvent.incident_id == incident.id,
                        TimelineEvent.kind == "message")))
                    claims = list(session.scalars(select(TimelineEvent).where(
                        TimelineEvent.incident_id == incident.id,
                        TimelineEvent.kind == "reminder")))
                assert all(c.slack_ts for c in claims), [c.data for c in claims]
                assert len(stored) >= MESSAGES
                return incident, stored, claims

            incident, stored, claims = eventually(settled, timeout=15)
            assert sorted(stored) == [f"busy {i:03d}" for i in range(MESSAGES)]
            assert len(stored) == len(set(stored))
            posted = [m for m in fake.messages(channel)
                      if "no status update for" in str(m.get("text"))]
            due_keys = [c.data.get("due_at") for c in claims]
            assert len(due_keys) == len(set(due_keys))  # no reminder claimed twice
            assert len(posted) >= len(claims) >= 2  # before and after the crash
            assert sorted(str(m["ts"]) for m in posted)[:len(claims)] == sorted(
                str(c.slack_ts) for c in claims)  # each claim posted exactly once

            card_ts = incident.card_ts
            updates = [c for c in fake.calls_to("chat.update") if c.get("ts") == card_ts]
            assert updates, "the card was never refreshed"
            due = incident.next_update_due_at
            assert due is not None
            assert str(int(due.timestamp())) in str(updates[-1].get("blocks"))
            engine.dispose()
        finally:
            bot.stop()


def test_declarations_acknowledged_before_a_sigkill_are_declared_once_after_restart(
        database_url: str) -> None:
    """Every declaration Slack got an answer for is a committed job. The bot is SIGKILLed
    right after the answers, with the first declaration half done (Slack slow to invite)
    and the others still queued; after the restart each has its channel, once, with its
    card pinned."""
    titles = [f"Acked {i}" for i in range(6)]
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.add_user(ALICE, "alice")
        fake.set_latency(5.0, "conversations.invite")
        # on PostgreSQL a dead replica's claims lapse with their lease
        bot = BotProcess(bot_env(fake.api_url, database_url, work_threads=1,
                                 job_lease_seconds=3)).start()
        try:
            driver = SlackDriver(f"{bot.url}/slack/events", SIGNING_SECRET, fake)
            statuses = [driver.command(f"declare {title}", user_id=ALICE,
                                       channel_id="CGENERAL").status for title in titles]
            assert statuses == [200] * len(titles)
            bot.stop(signal.SIGKILL)
            assert len(fake.channels()) <= 1
            fake.set_latency(0.0, "conversations.invite")
            bot.start()

            def incident_channels() -> list[str]:
                return sorted(c["name"] for c in fake.channels() if c["name"].startswith("inc-"))

            eventually(lambda: len(incident_channels()) >= len(titles), timeout=30)
            eventually(lambda: all(fake.pins(c["id"]) for c in fake.channels()
                                   if c["name"].startswith("inc-")), timeout=30)
            time.sleep(1.0)  # time for a duplicate, were there one
            assert [n.split("-", 2)[2] for n in incident_channels()] == sorted(
                f"acked-{i}" for i in range(len(titles)))
        finally:
            bot.stop()
