"""Archiving after resolution (never deleting, never an open incident) and the nudge for
quiet open incidents (seeds 001, 002 §6)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from incidentbot.models import Incident, TimelineEvent
from tests.conftest import ALICE, RunningBot
from tests.helpers import eventually
from tests.test_declare_e2e import declare
from tests.test_resolution_e2e import resolve_by_button, uploaded_postmortem

ARCHIVE_DAYS = 3 / 86400  # 3 seconds


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"archive_after_days": ARCHIVE_DAYS, "stale_after_days": 2 / 86400,
            "sweep_minutes": 0.02}


def test_resolved_incident_is_archived_after_notice_open_one_never(running: RunningBot) -> None:
    fake = running.fake
    still_open = declare(running, "Still burning")
    resolved = declare(running, "Put out")
    resolve_by_button(running, resolved)
    uploaded_postmortem(running)
    eventually(lambda: [m for m in fake.messages(resolved.channel_id)
                        if "will be archived (never deleted)" in str(m.get("text"))])
    eventually(lambda: fake.channel(resolved.channel_id)["is_archived"], timeout=15)
    with running.session() as session:
        closed = session.get(Incident, resolved.id)
        assert closed is not None and closed.status == "closed" and closed.closed_at
    time.sleep(ARCHIVE_DAYS * 86400)
    assert not fake.channel(still_open.channel_id)["is_archived"]
    assert fake.calls_to("conversations.archive") == [
        c for c in fake.calls_to("conversations.archive")
        if c.get("channel") == resolved.channel_id]


def test_reopen_cancels_the_archive(running: RunningBot) -> None:
    incident = declare(running, "Came back")
    resolve_by_button(running, incident)
    uploaded_postmortem(running)
    running.driver.command("reopen", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: running.bot.ctx.incident_by_id(incident.id).status == "investigating")
    time.sleep(ARCHIVE_DAYS * 86400 + 1.5)
    assert not running.fake.channel(incident.channel_id)["is_archived"]


def test_quiet_open_incident_is_nudged_and_it_is_recorded(running: RunningBot) -> None:
    incident = declare(running, "Forgotten")
    nudges = eventually(lambda: [m for m in running.fake.messages(incident.channel_id)
                                 if "still active" in str(m.get("text"))], timeout=15)
    assert "<@UALICE>" in str(nudges[0]["text"])
    time.sleep(1.0)
    with running.session() as session:
        recorded = list(session.scalars(select(TimelineEvent).where(
            TimelineEvent.kind == "nudged")))
    assert len(recorded) == len([m for m in running.fake.messages(incident.channel_id)
                                 if "still active" in str(m.get("text"))]) >= 1
