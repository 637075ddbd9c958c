"""The bot as users start it (`python app.py`): missing settings, start-up, and a restart
that neither skips nor doubles a reminder and loses no timeline row."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from incidentbot.models import Incident, TimelineEvent
from tests.conftest import ALICE, BOB, BOT_TOKEN, SIGNING_SECRET
from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.process import ROOT, BotProcess, bot_env


def test_missing_credentials_are_named_without_a_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr and "SLACK_SIGNING_SECRET" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_invalid_setting_is_named(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PORT": "not-a-port"}
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "PORT" in result.stderr
    assert "Traceback" not in result.stderr


def _reminders(db_url: str, incident_id: int) -> list[TimelineEvent]:
    engine = create_engine(db_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(TimelineEvent).where(
                TimelineEvent.incident_id == incident_id, TimelineEvent.kind == "reminder")))
    finally:
        engine.dispose()


def test_restart_fires_a_missed_reminder_once_and_keeps_the_timeline(
    database_url: str, tmp_path: Path
) -> None:
    interval = 0.05  # minutes: 3 s
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.add_user(ALICE, "alice")
        fake.add_user(BOB, "bob")
        bot = BotProcess(bot_env(fake.api_url, database_url,
                                 reminder_sev3_minutes=interval)).start()
        try:
            driver = SlackDriver(f"{bot.url}/slack/events", SIGNING_SECRET, fake)
            driver.command("declare Restart drill", user_id=ALICE, channel_id="CGENERAL")
            channel = eventually(lambda: _created_channel(fake))
            eventually(lambda: fake.pins(channel))  # people are invited once it is recorded
            for i in range(5):
                driver.event(driver.message_event(channel, BOB, f"msg {i}",
                                                  ts=f"1900000{i:03d}.000100"))
            bot.stop()
            time.sleep(interval * 60 * 2.2)  # two reminders fall due while the bot is down
            before = len(_reminder_messages(fake, channel))
            bot.start()
            restarted = time.monotonic()
            eventually(lambda: len(_reminder_messages(fake, channel)) > before, timeout=10)
            fired_after = time.monotonic() - restarted
            time.sleep(1.0)  # the next one is due a full interval after this one
            assert len(_reminder_messages(fake, channel)) == before + 1
            assert fired_after < interval * 60, fired_after
            engine = create_engine(database_url)
            with Session(engine) as session:
                incident = session.scalars(select(Incident)).one()
                texts = list(session.scalars(select(TimelineEvent.text).where(
                    TimelineEvent.incident_id == incident.id,
                    TimelineEvent.kind == "message").order_by(TimelineEvent.slack_ts)))
            engine.dispose()
            assert texts == [f"msg {i}" for i in range(5)]
            assert len(_reminders(database_url, incident.id)) == before + 1
        finally:
            bot.stop()


def _created_channel(fake: FakeSlack) -> str:
    created = fake.calls_to("conversations.create")
    assert created, "no channel created yet"
    channel = fake.channel_by_name(str(created[0]["name"]))
    assert channel is not None
    return str(channel["id"])


def _reminder_messages(fake: FakeSlack, channel: str) -> list[dict[str, object]]:
    return [m for m in fake.messages(channel) if "no status update for" in str(m.get("text"))]
