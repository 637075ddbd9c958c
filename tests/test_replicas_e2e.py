"""Three replicas on one PostgreSQL: requests spread across them, the scheduler leader killed
with SIGKILL mid-way; every message stored once, every due reminder posted exactly once and
within 10 s of its due time; concurrent IC assignments leave one consistent result."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from incidentbot.models import Incident, RoleAssignment, TimelineEvent
from incidentbot.slack import reminder_metadata
from tests.conftest import ALICE, BOB, BOT_TOKEN, CAROL, SIGNING_SECRET, _fresh_postgres_schema
from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack
from tests.helpers import declared_channel, eventually
from tests.process import BotProcess, bot_env

INTERVAL_MIN = 0.05  # 3 s between reminders
MESSAGES = 240


@pytest.fixture
def shared_postgres(postgres_admin_url: str) -> Iterator[str]:
    yield from _fresh_postgres_schema(postgres_admin_url)


def health(bot: BotProcess) -> dict[str, object]:
    with urllib.request.urlopen(f"{bot.url}/healthz", timeout=2) as response:
        return dict(json.loads(response.read()))


def start_replicas(url: str, fake: FakeSlack, count: int = 3) -> list[BotProcess]:
    env = bot_env(fake.api_url, url, reminder_sev3_minutes=INTERVAL_MIN)
    bots = [BotProcess(env).start() for _ in range(count)]
    eventually(lambda: sum(bool(health(b)["leader"]) for b in bots) == 1)
    return bots


def test_three_replicas_leader_killed_mid_incident(shared_postgres: str) -> None:
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        for user, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")):
            fake.add_user(user, name)
        bots = start_replicas(shared_postgres, fake)
        try:
            drivers = [SlackDriver(f"{b.url}/slack/events", SIGNING_SECRET, fake) for b in bots]
            leader = next(i for i, b in enumerate(bots) if health(b)["leader"])
            follower = (leader + 1) % 3
            channel = declared_channel(drivers[follower], "Replicated outage", ALICE)
            acked: set[int] = set()

            def deliver(i: int, attempt: int = 0) -> None:
                event = drivers[(i + attempt) % 3].message_event(
                    channel, BOB, f"replica msg {i:03d}", ts=f"{1_900_000_000 + i}.000200")
                headers = {"X-Slack-Retry-Num": str(attempt)} if attempt else None
                try:
                    response = drivers[(i + attempt) % 3].event(event, headers=headers)
                except OSError:
                    return
                if response.status == 200:
                    acked.add(i)

            def flow() -> None:
                for i in range(MESSAGES):
                    deliver(i)
                    time.sleep(0.015)

            sender = threading.Thread(target=flow)
            sender.start()
            time.sleep(INTERVAL_MIN * 60 * 0.8)  # kill just before the first reminder is due
            bots[leader].stop(signal.SIGKILL)
            sender.join(timeout=60)
            for attempt in (1, 2):  # Slack's retries go to whichever replica answers
                for i in range(MESSAGES):
                    if i not in acked:
                        deliver(i, attempt)
            survivors = [b for i, b in enumerate(bots) if i != leader]
            eventually(lambda: sum(bool(health(b)["leader"]) for b in survivors) == 1,
                       timeout=10)
            time.sleep(INTERVAL_MIN * 60 * 2)  # two more reminders fall due

            engine = create_engine(shared_postgres)
            with Session(engine) as session:
                incident = session.scalars(select(Incident)).one()
                texts = list(session.scalars(select(TimelineEvent.text).where(
                    TimelineEvent.incident_id == incident.id,
                    TimelineEvent.kind == "message")))
                claims = list(session.scalars(select(TimelineEvent).where(
                    TimelineEvent.incident_id == incident.id,
                    TimelineEvent.kind == "reminder")))
            engine.dispose()
            assert sorted(texts) == [f"replica msg {i:03d}" for i in range(MESSAGES)]
            posted = [m for m in fake.messages(channel)
                      if "no status update for" in str(m.get("text"))]
            assert len(claims) >= 2 and len(posted) == len(claims)
            due_keys = [c.data["due_at"] for c in claims]
            assert len(set(due_keys)) == len(due_keys)
            lateness = [(c.occurred_at - datetime.fromisoformat(c.data["due_at"])).total_seconds()
                        for c in claims]
            assert max(lateness) < 10, lateness  # including the one due during the failover
        finally:
            for bot in bots:
                bot.stop()


def claims_of(url: str) -> list[TimelineEvent]:
    """The reminder claims of the one incident, oldest first."""
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(TimelineEvent).where(
                TimelineEvent.kind == "reminder").order_by(TimelineEvent.occurred_at)))
    finally:
        engine.dispose()


def reminder_posts(fake: FakeSlack, channel: str) -> dict[str, list[str]]:
    """The ts of the reminder messages in the channel, by the claim key in their metadata."""
    posts: dict[str, list[str]] = {}
    for message in fake.messages(channel):
        metadata = message.get("metadata") or {}
        if metadata.get("event_type") == reminder_metadata.EVENT_TYPE:
            posts.setdefault(metadata["event_payload"]["claim_key"], []).append(message["ts"])
    return posts


def test_leader_killed_between_slacks_answer_and_the_confirmation_posts_one_reminder(
    shared_postgres: str
) -> None:
    """Three replicas on PostgreSQL with the leader SIGKILLed between Slack's answer to a
    reminder post and its confirmation: one reminder, not two. The fake Slack kills the
    leader once it has stored the first reminder and before it
    answers, so the leader never learns the message's ts; the next leader finds the message
    by the claim key in its metadata and confirms the claim with it."""
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.add_user(ALICE, "alice")
        bots = start_replicas(shared_postgres, fake)
        try:
            leader = next(b for b in bots if health(b)["leader"])
            survivors = [b for b in bots if b is not leader]
            killed = threading.Event()

            def kill_the_poster(args: dict[str, object], _answer: dict[str, object]) -> bool:
                metadata = args.get("metadata")
                if killed.is_set() or not isinstance(metadata, dict) or \
                        metadata.get("event_type") != reminder_metadata.EVENT_TYPE:
                    return False
                leader.kill()  # the message is stored; the answer has not left
                killed.set()
                return True  # and it never does

            fake.before_answer("chat.postMessage", kill_the_poster)
            driver = SlackDriver(f"{survivors[0].url}/slack/events", SIGNING_SECRET, fake)
            channel = declared_channel(driver, "Reminder in flight", ALICE)
            eventually(killed.is_set, timeout=INTERVAL_MIN * 60 + 10)
            [(first_key, [first_ts])] = reminder_posts(fake, channel).items()
            eventually(lambda: sum(bool(health(b)["leader"]) for b in survivors) == 1,
                       timeout=10)
            eventually(lambda: len([c for c in claims_of(shared_postgres) if c.slack_ts]) >= 2,
                       timeout=INTERVAL_MIN * 60 * 3)  # the next leader posted one more too

            claims = claims_of(shared_postgres)
            posts = reminder_posts(fake, channel)
            assert claims[0].dedupe_key == first_key and claims[0].slack_ts == first_ts
            assert posts[first_key] == [first_ts]  # one reminder, not two
            assert all(len(ts) == 1 for ts in posts.values()), posts
            assert {c.dedupe_key: [c.slack_ts] for c in claims if c.slack_ts} == posts
        finally:
            for bot in bots:
                bot.stop()


def test_concurrent_ic_assignments_and_duplicate_events_stay_consistent(
    shared_postgres: str
) -> None:
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        for user, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")):
            fake.add_user(user, name)
        bots = start_replicas(shared_postgres, fake, count=2)
        try:
            drivers = [SlackDriver(f"{b.url}/slack/events", SIGNING_SECRET, fake) for b in bots]
            channel = declared_channel(drivers[0], "Contended command", ALICE)
            for round_ in range(5):
                targets = (BOB, CAROL) if round_ % 2 == 0 else (CAROL, BOB)
                threads = [threading.Thread(target=drivers[i].command, args=(
                    f"role ic <@{target}>",), kwargs={"user_id": ALICE, "channel_id": channel})
                    for i, target in enumerate(targets)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                time.sleep(0.5)
                engine = create_engine(shared_postgres)
                with Session(engine) as session:
                    current = list(session.scalars(select(RoleAssignment).where(
                        RoleAssignment.role == "ic", RoleAssignment.relieved_at.is_(None))))
                engine.dispose()
                assert len(current) == 1
                # give command back to Alice so both requests are authorized next round
                drivers[0].command("role ic <@UALICE>", user_id=current[0].user_id,
                                   channel_id=channel)
                time.sleep(0.3)
            for n in range(10):  # one retried event reaching both replicas at the same instant
                event = drivers[0].message_event(channel, BOB, f"twice {n}",
                                                 ts=f"{1_900_000_900 + n}.000100")
                now = int(time.time())
                threads = [threading.Thread(target=driver.event, args=(event,), kwargs={
                    "event_id": f"Ev0SAME{n}", "timestamp": now - i}) for i, driver in
                    enumerate(drivers)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            engine = create_engine(shared_postgres)
            with Session(engine) as session:
                texts = list(session.scalars(select(TimelineEvent.text).where(
                    TimelineEvent.text.like("twice %"))))
            engine.dispose()
            assert sorted(texts) == sorted(f"twice {n}" for n in range(10))
        finally:
            for bot in bots:
                bot.stop()
