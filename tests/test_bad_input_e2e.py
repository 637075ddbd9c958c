"""Every wrong input or Slack failure gets a clear message, and nothing half-made is left."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from incidentbot.models import Incident, TimelineEvent
from tests.conftest import ALICE, RunningBot
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, answer, assert_fast_acks, declare


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("launch rockets", "`launch` is not an incident command"),
        ("role", "Say which role and who. Use `/incident role ic|scribe|comms|tech|ops|planning"),
        ("role wizard <@UBOB|bob>", "`wizard` is not a role"),
        ("role ic bob", "`bob` is not a user mention"),
        ("role ic <!channel>", "`&lt;!channel&gt;` is not a person"),
        ("severity SEV9", "`SEV9` is not a severity. Use `/incident severity SEV1|SEV2|SEV3|SEV4`"),
        ("status sleeping", "`sleeping` is not a status you can set"),
    ],
)
def test_wrong_commands_get_an_ephemeral_hint(running: RunningBot, text: str, says: str) -> None:
    response = running.driver.command(text, user_id=ALICE, channel_id=GENERAL)
    assert response.status == 200
    assert response.json["response_type"] == "ephemeral"
    assert says in response.json["text"]
    assert running.fake.calls_to("conversations.create") == []
    assert_fast_acks(running)


def test_commands_that_need_an_incident_channel(running: RunningBot) -> None:
    for text in ("severity SEV1", "status mitigated", "role ic <@UBOB|bob>"):
        running.driver.command(text, user_id=ALICE, channel_id=GENERAL)
        sub = text.split()[0]
        answer(running, running.driver.last_response_url,
               f"`/incident {sub}` works inside an incident channel")


@pytest.mark.parametrize(
    ("mention", "says"),
    [("<@UOTHERBOT|otherbot>", "is a bot"), ("<@UNOBODY1>", "is not a user in this workspace")],
)
def test_role_for_someone_who_is_not_a_person(
    running: RunningBot, mention: str, says: str
) -> None:
    incident = declare(running, "Broken deploys")
    running.driver.command(f"role ops {mention}", user_id=ALICE, channel_id=incident.channel_id)
    answer(running, running.driver.last_response_url, says)
    with running.session() as session:
        stored = session.get(Incident, incident.id)
        assert stored is not None and stored.holder("ops") is None


def test_title_too_long(running: RunningBot) -> None:
    running.driver.command("declare " + "word " * 60, user_id=ALICE, channel_id=GENERAL)
    answer(running, running.driver.last_response_url, "keep it to 200")
    assert running.fake.calls_to("conversations.create") == []


def test_name_taken_past_fifty_tries_declares_nothing(running: RunningBot) -> None:
    running.fake.fail_next("conversations.create", "name_taken", times=50)
    running.driver.command("declare Everything is on fire", user_id=ALICE, channel_id=GENERAL)
    text = answer(running, running.driver.last_response_url, "could not create the incident")
    assert "name_taken" in text and "No incident was declared" in text
    assert len(running.fake.calls_to("conversations.create")) == 50
    with running.session() as session:
        assert session.scalar(select(func.count(Incident.id))) == 0


def test_channel_creation_refused(running: RunningBot) -> None:
    running.fake.fail_next("conversations.create", "restricted_action")
    running.driver.command("declare Outage", user_id=ALICE, channel_id=GENERAL)
    answer(running, running.driver.last_response_url, "restricted_action")
    with running.session() as session:
        assert session.scalar(select(func.count(Incident.id))) == 0


def test_failed_follow_up_step_is_reported_and_recorded(running: RunningBot) -> None:
    running.fake.fail_next("conversations.setTopic", "channel_not_found")
    running.driver.command("declare Flaky topic", user_id=ALICE, channel_id=GENERAL)
    text = answer(running, running.driver.last_response_url, "incident declared")
    assert "Some steps failed" in text and "channel_not_found" in text
    with running.session() as session:
        incident = session.scalars(select(Incident)).one()
        errors = session.scalars(select(TimelineEvent).where(
            TimelineEvent.incident_id == incident.id, TimelineEvent.kind == "slack_error")).all()
        assert [e.data["error"] for e in errors] == ["channel_not_found"]
    assert running.fake.pins(incident.channel_id)  # the rest still happened


def test_expired_trigger_tells_the_user(running: RunningBot) -> None:
    running.fake.fail_next("views.open", "expired_trigger_id")
    running.driver.command("declare", user_id=ALICE, channel_id=GENERAL)
    answer(running, running.driver.last_response_url, "took too long to open the form")


def test_status_change_that_the_lifecycle_refuses(running: RunningBot) -> None:
    incident = declare(running, "Refusals")
    driver = running.driver
    driver.command("status resolved", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: running.fake.channel(incident.channel_id)["topic"].startswith(
        "SEV3 · Resolved"))
    driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)
    answer(running, driver.last_response_url, "reopen it before you change its severity")
