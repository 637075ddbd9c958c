"""Status updates (the seeds' format, broadcast, privacy) and update reminders with short
intervals (fractions of a minute), through the real scheduler."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from incidentbot.core import updates
from incidentbot.models import Incident, StatusUpdate, TimelineEvent, utcnow
from incidentbot.services import updates as update_service
from incidentbot.slack import blocks, reminder_metadata
from tests.conftest import ALICE, BOB, RunningBot, bot_running, make_settings
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, declare, last_card_text

BROADCAST = "CBROADCAST"
SHORT = 0.03  # minutes: 1.8 s


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"broadcast_channel": BROADCAST, "reminder_sev1_minutes": SHORT,
            "reminder_sev2_minutes": 0.05, "reminder_sev3_minutes": 30,
            "reminder_sev4_minutes": 0}


@pytest.fixture(autouse=True)
def broadcast_channel(fake) -> None:  # type: ignore[no-untyped-def]
    fake.add_channel("incidents", members=["UBOT", ALICE], channel_id=BROADCAST)


def events(running: RunningBot, incident_id: int, kind: str) -> list[TimelineEvent]:
    with running.session() as session:
        return list(session.scalars(select(TimelineEvent).where(
            TimelineEvent.incident_id == incident_id, TimelineEvent.kind == kind)
            .order_by(TimelineEvent.occurred_at)))


def post_update(running: RunningBot, incident: Incident, *, status: str = "mitigated",
                next_minutes: str = "30", user: str = BOB) -> None:
    driver, fake = running.driver, running.fake
    driver.block_action(blocks.POST_UPDATE, user_id=user, channel_id=incident.channel_id,
                        message_ts=incident.card_ts or "", value=str(incident.id))
    view = eventually(lambda: (v := fake.last_view()) and v["callback_id"] == blocks.UPDATE_VIEW
                      and v)
    response = driver.submit_view(view["id"], {
        blocks.STATUS: status, blocks.IMPACT: "EU customers cannot pay <!channel>",
        blocks.CURRENT_ACTION: "Rolling back deploy 42", blocks.NEXT_UPDATE: next_minutes,
        blocks.ETA: "30 min",
    }, user_id=user)
    assert response.status == 200 and not (response.json or {}).get("response_action")


def reminders_in(running: RunningBot, channel: str) -> list[dict[str, object]]:
    return [m for m in running.fake.messages(channel)
            if "no status update for" in str(m.get("text", ""))]


def test_update_posts_seeds_format_in_channel_and_broadcast(running: RunningBot) -> None:
    incident = declare(running, "Checkout errors")
    running.driver.command("severity SEV2", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "SEV2" in last_card_text(running, incident))
    with running.session() as session:
        session.execute(Incident.__table__.update().where(Incident.id == incident.id)
                        .values(service="payments"))
        session.commit()
    post_update(running, incident)
    fake = running.fake
    posted = eventually(lambda: [m for m in fake.messages(incident.channel_id)
                                 if "[SEV2] - [payments] - [Mitigated]" in m.get("text", "")])
    text = posted[0]["text"]
    assert "*Impact:* EU customers cannot pay &lt;!channel&gt;" in text
    assert "*Current action:* Rolling back deploy 42" in text and "*ETA:* 30 min" in text
    mirrored = eventually(lambda: [m for m in fake.messages(BROADCAST)
                                   if "[SEV2] - [payments] - [Mitigated]" in m.get("text", "")])
    assert f"<#{incident.channel_id}>" in mirrored[0]["text"]
    eventually(lambda: "Latest update" in last_card_text(running, incident))
    assert "Next update due" in last_card_text(running, incident)
    with running.session() as session:
        update = session.scalars(select(StatusUpdate)).one()
        assert update.impact == "EU customers cannot pay <!channel>"  # stored as given
        stored = session.get(Incident, incident.id)
        assert stored is not None and stored.status == "mitigated"
    assert events(running, incident.id, "update_posted")


def test_update_form_validates_inline(running: RunningBot) -> None:
    incident = declare(running, "Validation")
    driver, fake = running.driver, running.fake
    driver.command("update", user_id=ALICE, channel_id=incident.channel_id)
    view = eventually(lambda: (v := fake.last_view()) and v["callback_id"] == blocks.UPDATE_VIEW
                      and v)
    response = driver.submit_view(view["id"], {blocks.STATUS: "identified", blocks.IMPACT: " ",
                                               blocks.NEXT_UPDATE: "-5"}, user_id=ALICE)
    errors = response.json["errors"]
    assert set(errors) == {blocks.IMPACT, blocks.CURRENT_ACTION, blocks.NEXT_UPDATE}


def test_private_incident_leaks_no_details_to_broadcast(running: RunningBot) -> None:
    driver, fake = running.driver, running.fake
    driver.command("declare", user_id=ALICE, channel_id=GENERAL)
    view = eventually(fake.last_view)
    driver.submit_view(view["id"], {blocks.TITLE: "Secret breach", blocks.SEVERITY: "SEV2",
                                    blocks.PRIVATE: ["private"]}, user_id=ALICE)
    incident = eventually(lambda: (lambda i: i if i and i.card_ts else None)(
        _latest_incident(running)))
    post_update(running, incident, user=ALICE)
    eventually(lambda: any("[SEV2]" in m.get("text", "") for m in
                           fake.messages(incident.channel_id)))
    eventually(lambda: any("private SEV2 incident posted a status update" in m.get("text", "")
                           for m in fake.messages(BROADCAST)))
    # the declaration's broadcast is its last step and may land after the update's
    eventually(lambda: len(fake.messages(BROADCAST)) >= 2)
    broadcast = [m.get("text", "") for m in fake.messages(BROADCAST)]
    assert len(broadcast) == 2  # the declaration and the update, both without details
    assert all("Secret" not in t and "EU customers" not in t for t in broadcast)


def _latest_incident(running: RunningBot) -> Incident | None:
    with running.session() as session:
        return session.scalars(select(Incident).order_by(Incident.id.desc())).first()


def test_reminder_fires_when_due_naming_ic_and_comms(running: RunningBot) -> None:
    incident = declare(running, "Reminder due")
    driver = running.driver
    driver.command("role comms <@UBOB|bob>", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "<@UBOB>" in last_card_text(running, incident))
    driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)
    reminder = eventually(lambda: reminders_in(running, incident.channel_id), timeout=15)[0]
    assert "<@UALICE>" in str(reminder["text"]) and "<@UBOB>" in str(reminder["text"])
    actions = [e["action_id"] for b in reminder["blocks"] if b["type"] == "actions"  # type: ignore[union-attr]
               for e in b["elements"]]
    assert actions == [blocks.REMINDER_POST_UPDATE, blocks.REMINDER_SNOOZE]
    assert events(running, incident.id, "reminder")


def test_update_resets_the_clock(running: RunningBot) -> None:
    incident = declare(running, "Reset by update")
    running.driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "SEV1" in last_card_text(running, incident))
    post_update(running, incident, next_minutes=str(SHORT * 2))
    update = eventually(lambda: events(running, incident.id, "update_posted"))[0]
    reminder = eventually(lambda: events(running, incident.id, "reminder"), timeout=15)[0]
    assert reminder.occurred_at - update.occurred_at >= timedelta(minutes=SHORT * 2) - \
        timedelta(milliseconds=50)


def test_snooze_delays_one_interval_and_severity_change_replans(running: RunningBot) -> None:
    incident = declare(running, "Snooze me")  # SEV3: 30 min, far away
    driver = running.driver
    time.sleep(0.5)
    assert events(running, incident.id, "reminder") == []
    driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)  # 1.8 s
    first = eventually(lambda: events(running, incident.id, "reminder"), timeout=15)[0]
    message = eventually(lambda: reminders_in(running, incident.channel_id))[0]
    driver.block_action(blocks.REMINDER_SNOOZE, user_id=ALICE, channel_id=incident.channel_id,
                        message_ts=str(message["ts"]), value=str(incident.id))
    snoozed = eventually(lambda: events(running, incident.id, "snoozed"))[0]
    second = eventually(lambda: events(running, incident.id, "reminder")[1:], timeout=15)[0]
    assert second.occurred_at - snoozed.occurred_at >= timedelta(minutes=SHORT) - \
        timedelta(milliseconds=50)
    assert first.occurred_at < snoozed.occurred_at


def test_resolve_stops_reminders(running: RunningBot) -> None:
    incident = declare(running, "Stop on resolve")
    driver = running.driver
    driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "SEV1" in last_card_text(running, incident))
    driver.command("status resolved", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "Resolved" in last_card_text(running, incident))
    eventually(lambda: running.bot.reminders.due_at(incident.id) is None)
    time.sleep(SHORT * 60 * 1.5)
    assert events(running, incident.id, "reminder") == []
    assert reminders_in(running, incident.channel_id) == []


def test_escalates_after_two_silent_intervals(running: RunningBot) -> None:
    incident = declare(running, "Silent incident")
    running.driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)
    escalation = eventually(lambda: [m for m in running.fake.messages(BROADCAST)
                                     if "Escalation" in m.get("text", "")], timeout=20)
    assert f"<#{incident.channel_id}>" in escalation[0]["text"]
    assert len(events(running, incident.id, "escalation")) == 1
    assert len(events(running, incident.id, "reminder")) >= 2


def test_escalation_without_broadcast_channel_goes_to_the_ic_by_dm(
    database_url: str, fake: FakeSlack
) -> None:
    settings = make_settings(database_url, fake, reminder_sev1_minutes=SHORT)
    with bot_running(settings, fake) as running:
        incident = declare(running, "Nobody watching")
        running.driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)

        def dm_to_alice() -> list[dict[str, object]]:
            ims = [c for c in fake.channels() if c.get("is_im") and c.get("user") == ALICE]
            return [m for c in ims for m in fake.messages(c["id"])
                    if "Escalation" in str(m.get("text"))]

        dm = eventually(dm_to_alice, timeout=20)[0]
        assert f"<#{incident.channel_id}>" in str(dm["text"])


def test_a_reminder_whose_confirmation_fails_once_is_confirmed_on_a_retry(
        running: RunningBot, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claimed reminder left unconfirmed would be posted again after the next restart:
    a failed confirmation (here the database refusing the first attempt) is tried again."""
    real_mark = updates.mark_reminder_posted
    attempts: list[str] = []

    def refused_once(session: Any, incident_id: int, claim_key: str, ts: str) -> None:
        attempts.append(claim_key)
        if len(attempts) == 1:
            raise OperationalError("UPDATE timeline_events", {}, Exception("database is locked"))
        real_mark(session, incident_id, claim_key, ts)

    monkeypatch.setattr(updates, "mark_reminder_posted", refused_once)
    incident = declare(running, "Confirm on retry")
    running.driver.command("severity SEV1", user_id=ALICE, channel_id=incident.channel_id)
    claim = eventually(lambda: [e for e in events(running, incident.id, "reminder")
                                if e.slack_ts], timeout=15)[0]
    assert attempts[:2] == [claim.dedupe_key, claim.dedupe_key]
    posted = reminders_in(running, incident.channel_id)
    assert [str(m["ts"]) for m in posted][:1] == [claim.slack_ts]


# -- a reminder Slack stored but whose confirmation never landed (the leader died) ------------


def fall_due(running: RunningBot, incident_id: int) -> None:
    """Make the incident's reminder due now (its job stays planned far away)."""
    with running.session() as session, session.begin():
        incident = session.get(Incident, incident_id)
        assert incident is not None
        incident.next_update_due_at = utcnow() - timedelta(seconds=1)


def posted_unconfirmed(running: RunningBot, monkeypatch: pytest.MonkeyPatch
                       ) -> tuple[Incident, dict[str, Any]]:
    """A reminder claimed and posted whose confirmation never reaches the database: what a
    leader killed between Slack's answer and the confirmation leaves behind."""
    incident = declare(running, "Stored but not confirmed")  # SEV3: the next one in 30 min

    def refused(*_args: Any) -> None:
        raise OperationalError("UPDATE timeline_events", {}, Exception("the leader died"))

    fall_due(running, incident.id)
    with monkeypatch.context() as patched:
        patched.setattr(update_service, "CONFIRM_PAUSES_S", ())
        patched.setattr(updates, "mark_reminder_posted", refused)
        running.bot.services.updates.fire_reminder(incident.id)
    [claim] = events(running, incident.id, "reminder")
    [posted] = reminders_in(running, incident.channel_id)
    assert claim.slack_ts is None and claim.dedupe_key
    assert posted["metadata"] == reminder_metadata.reminder_metadata(claim.dedupe_key,
                                                                     incident.id)
    return incident, posted


def test_a_reminder_slack_stored_is_confirmed_at_takeover_not_posted_again(
        running: RunningBot, monkeypatch: pytest.MonkeyPatch) -> None:
    incident, posted = posted_unconfirmed(running, monkeypatch)
    assert running.bot.services.updates.recover_reminders() == 1
    assert [m["ts"] for m in reminders_in(running, incident.channel_id)] == [posted["ts"]]
    [confirmed] = events(running, incident.id, "reminder")
    assert confirmed.slack_ts == posted["ts"] and confirmed.data["posted"]
    lookup = running.fake.calls_to("conversations.history")[-1]
    assert lookup["channel"] == incident.channel_id and lookup["include_all_metadata"] == "1"
    assert float(lookup["oldest"]) <= float(str(posted["ts"])) <= float(lookup["latest"])
    assert running.bot.services.updates.recover_reminders() == 0  # nothing left to settle


def test_a_reminder_is_posted_at_takeover_when_the_channel_cannot_be_read(
        running: RunningBot, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not knowing whether Slack stored it, the bot posts it: a reminder missed is worse
    than a reminder twice."""
    incident, posted = posted_unconfirmed(running, monkeypatch)
    running.fake.fail_next("conversations.history", "missing_scope")
    assert running.bot.services.updates.recover_reminders() == 1
    first, again = reminders_in(running, incident.channel_id)
    assert first["ts"] == posted["ts"] and again["metadata"] == posted["metadata"]
    [confirmed] = events(running, incident.id, "reminder")
    assert confirmed.slack_ts == again["ts"]


def test_a_reminder_claimed_but_never_posted_is_posted_once_at_takeover(
        running: RunningBot) -> None:
    """The leader died between the claim and the post: nothing in the channel, so posted."""
    incident = declare(running, "Claimed, never posted")
    fall_due(running, incident.id)
    with running.session() as session, session.begin():
        stored = session.get(Incident, incident.id)
        assert stored is not None
        outcome = updates.claim_reminder(session, stored, interval_minutes=30)
    assert outcome.post and outcome.claim_key
    assert running.bot.services.updates.recover_reminders() == 1
    [posted] = reminders_in(running, incident.channel_id)
    assert posted["metadata"] == reminder_metadata.reminder_metadata(outcome.claim_key,
                                                                     incident.id)
    [confirmed] = events(running, incident.id, "reminder")
    assert confirmed.slack_ts == posted["ts"]
