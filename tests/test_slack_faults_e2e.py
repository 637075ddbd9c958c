"""Slack misbehaving (rate limits, 5xx, connection resets, removed or archived channels):
what must be posted is posted exactly once, or the person is told; the bot keeps running."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.conftest import ALICE, RunningBot
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, answer, declare, last_card_text
from tests.test_resolution_e2e import resolve_by_button
from tests.test_updates_e2e import post_update

UPDATE_HEAD = "[SEV3] - [Faulty] - [Mitigated]"

FAULTS = {
    "ratelimited 429 + Retry-After": {"error": "ratelimited", "status": 429, "retry_after": 1},
    "HTTP 503": {"error": "service_unavailable", "status": 503},
    "connection reset": {"reset_connection": True},
}


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"reminder_sev1_minutes": 0.02, "reminder_retry_seconds": 1}


def _posted(running: RunningBot, channel: str, text: str) -> list[dict[str, object]]:
    return [m for m in running.fake.messages(channel) if text in str(m.get("text", ""))]


def _healthy(running: RunningBot) -> bool:
    with urllib.request.urlopen(f"{running.url}/healthz", timeout=5) as response:
        return response.status == 200


@pytest.mark.parametrize("fault", list(FAULTS))
def test_update_is_posted_exactly_once_through_transient_faults(
    running: RunningBot, fault: str
) -> None:
    incident = declare(running, "Faulty")
    running.fake.fail_next("chat.postMessage", **FAULTS[fault], times=2)  # type: ignore[arg-type]
    post_update(running, incident)
    eventually(lambda: _posted(running, incident.channel_id, UPDATE_HEAD), timeout=15)
    eventually(lambda: "Latest update" in last_card_text(running, incident))
    assert len(_posted(running, incident.channel_id, UPDATE_HEAD)) == 1
    assert _healthy(running)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_declare_and_card_update_survive_transient_faults(
    running: RunningBot, fault: str
) -> None:
    running.fake.fail_next("conversations.create", **FAULTS[fault])  # type: ignore[arg-type]
    incident = declare(running, "Flaky create")
    assert len(running.fake.calls_to("conversations.create")) >= 2
    assert len([c for c in running.fake.channels() if "flaky-create" in c["name"]]) == 1
    running.fake.fail_next("chat.update", **FAULTS[fault], times=2)  # type: ignore[arg-type]
    running.driver.command("status identified", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "Identified" in last_card_text(running, incident), timeout=15)


def test_bot_removed_from_public_channel_rejoins_and_posts(running: RunningBot) -> None:
    incident = declare(running, "Kicked out")
    running.fake.fail_next("chat.postMessage", "not_in_channel")
    running.driver.command("note we are back", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: _posted(running, incident.channel_id, "we are back"))
    assert running.fake.calls_to("conversations.join")


@pytest.mark.parametrize("error", ["channel_not_found", "is_archived"])
def test_update_that_cannot_be_posted_is_saved_and_the_author_told(
    running: RunningBot, error: str
) -> None:
    incident = declare(running, "Gone channel")
    running.fake.fail_next("chat.postMessage", error)
    post_update(running, incident, user=ALICE)
    warning = eventually(lambda: [e for e in running.fake.ephemerals(ALICE)
                                  if "could not post it" in json.dumps(e)])
    assert error in json.dumps(warning[0])
    assert _healthy(running)


def test_all_clear_that_cannot_be_posted_is_reported(running: RunningBot) -> None:
    incident = declare(running, "Silent all-clear")
    running.fake.fail_next("chat.postMessage", "is_archived")
    resolve_by_button(running, incident)
    warning = eventually(lambda: [e for e in running.fake.ephemerals(ALICE)
                                  if "could not post the all-clear" in json.dumps(e)])
    assert warning


def test_reminder_is_retried_until_slack_takes_it_and_posted_once(running: RunningBot) -> None:
    incident = declare(running, "Reminder faults")
    running.fake.fail_next("chat.postMessage", "internal_error", status=500, times=8)
    running.driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)
    reminder = eventually(lambda: _posted(running, incident.channel_id, "no status update for"),
                          timeout=20)
    assert len(reminder) == 1
    with running.session() as session:
        from sqlalchemy import select

        from incidentbot.models import TimelineEvent
        kinds = list(session.scalars(select(TimelineEvent.kind).where(
            TimelineEvent.incident_id == incident.id, TimelineEvent.kind == "reminder")))
    assert len(kinds) == len(_posted(running, incident.channel_id, "no status update for"))


def test_rate_limited_slash_command_reply_still_arrives(running: RunningBot) -> None:
    running.fake.fail_next("response_url", "rate_limited", status=429, retry_after=1)
    running.driver.command("list", user_id=ALICE, channel_id=GENERAL)
    answer(running, running.driver.last_response_url, "No open incidents")
