"""Timeline capture through signed Events API deliveries, notes and the key-event summary."""

from __future__ import annotations

import json
import time

from sqlalchemy import select

from incidentbot.models import TimelineEvent
from tests.conftest import ALICE, BOB, CAROL, RunningBot
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, answer, assert_fast_acks, declare


def messages(running: RunningBot, incident_id: int) -> list[TimelineEvent]:
    with running.session() as session:
        return list(session.scalars(select(TimelineEvent).where(
            TimelineEvent.incident_id == incident_id, TimelineEvent.kind == "message")
            .order_by(TimelineEvent.occurred_at, TimelineEvent.id)))


def test_messages_edits_deletions_threads_and_pushpins(running: RunningBot) -> None:
    incident = declare(running, "Timeline capture")
    driver, channel = running.driver, incident.channel_id
    sent = [
        driver.event(driver.message_event(channel, ALICE, "Seeing 500s on checkout",
                                          ts="1900000000.000100")),
        driver.event(driver.message_event(channel, BOB, "Rolling back deploy 42",
                                          ts="1900000060.000200")),
        driver.event(driver.message_event(channel, CAROL, "Rollback looks good",
                                          ts="1900000120.000300", thread_ts="1900000060.000200")),
        driver.event(driver.message_event(channel, ALICE, "oops wrong channel",
                                          ts="1900000180.000400")),
        driver.event(driver.message_changed_event(channel, "1900000060.000200",
                                                  "Rolling back deploy 41", BOB)),
        driver.event(driver.message_deleted_event(channel, "1900000180.000400")),
        driver.event(driver.reaction_event("reaction_added", CAROL, "pushpin", channel,
                                           "1900000120.000300")),
        driver.event(driver.reaction_event("reaction_added", CAROL, "pushpin", channel,
                                           "1900000000.000100")),
        driver.event(driver.reaction_event("reaction_removed", CAROL, "pushpin", channel,
                                           "1900000000.000100")),
        driver.event(driver.reaction_event("reaction_added", CAROL, "eyes", channel,
                                           "1900000060.000200")),
    ]
    assert all(r.status == 200 for r in sent)
    rows = messages(running, incident.id)
    assert [(r.actor_id, r.text, r.slack_ts) for r in rows] == [
        (ALICE, "Seeing 500s on checkout", "1900000000.000100"),
        (BOB, "Rolling back deploy 41", "1900000060.000200"),
        (CAROL, "Rollback looks good", "1900000120.000300"),
        (ALICE, "oops wrong channel", "1900000180.000400"),
    ]
    by_ts = {r.slack_ts: r for r in rows}
    assert by_ts["1900000060.000200"].edited_at is not None
    assert by_ts["1900000120.000300"].thread_ts == "1900000060.000200"
    assert by_ts["1900000180.000400"].deleted_at is not None
    assert [r.slack_ts for r in rows if r.is_key] == ["1900000120.000300"]
    assert rows[0].occurred_at.isoformat() == "2030-03-17T17:46:40.000100+00:00"
    assert_fast_acks(running)


def test_bot_messages_and_other_channels_are_not_captured(running: RunningBot) -> None:
    incident = declare(running, "Noise filter")
    driver = running.driver
    bot_message = driver.message_event(incident.channel_id, "UBOT", "card", ts="1900000000.1")
    bot_message["bot_id"] = "B0TEST"
    driver.event(bot_message)
    driver.event(driver.message_event(GENERAL, ALICE, "lunch?", ts="1900000000.2"))
    joined = driver.message_event(incident.channel_id, BOB, "<@UBOB> has joined the channel",
                                  ts="1900000000.3")
    joined["subtype"] = "channel_join"
    driver.event(joined)
    assert messages(running, incident.id) == []


def test_retried_deliveries_make_one_row(running: RunningBot) -> None:
    incident = declare(running, "Retries")
    driver = running.driver
    event = driver.message_event(incident.channel_id, BOB, "restarting db", ts="1900000300.0001")
    now = int(time.time())
    driver.event(event, event_id="Ev0RETRY1", timestamp=now - 3)
    for attempt in (1, 2):  # Slack signs each retry anew, with its own timestamp
        response = driver.event(event, event_id="Ev0RETRY1", timestamp=now - 3 + attempt,
                                headers={"X-Slack-Retry-Num": str(attempt),
                                         "X-Slack-Retry-Reason": "http_timeout"})
        assert response.status == 200
    driver.event(event, event_id="Ev0OTHERID", timestamp=now)  # same ts, another envelope
    assert len(messages(running, incident.id)) == 1


def test_note_and_timeline_summary(running: RunningBot) -> None:
    incident = declare(running, "Notes")
    driver, channel = running.driver, incident.channel_id
    driver.command("note Failover to us-west-2 started", user_id=BOB, channel_id=channel)
    answer(running, driver.last_response_url, "Noted as a key event")
    posted = eventually(lambda: [m for m in running.fake.messages(channel)
                                 if "Failover to us-west-2" in m.get("text", "")])
    assert "<@UBOB>" in posted[0]["text"]
    assert "`/incident note <text>`" in driver.command(
        "note", user_id=BOB, channel_id=channel).json["text"]
    driver.command("timeline", user_id=ALICE, channel_id=channel)
    summary = answer(running, driver.last_response_url, "Failover to us-west-2 started")
    assert "Key events" in summary
    with running.session() as session:
        note = session.scalars(select(TimelineEvent).where(
            TimelineEvent.kind == "note")).one()
        assert note.is_key and note.actor_id == BOB


def test_injection_in_notes_is_escaped_but_stored_as_given(running: RunningBot) -> None:
    incident = declare(running, "Escaping")
    driver = running.driver
    driver.command("note <!channel> see <https://evil.example|docs>", user_id=BOB,
                   channel_id=incident.channel_id)
    posted = eventually(lambda: [m for m in running.fake.messages(incident.channel_id)
                                 if "Key event noted" in m.get("text", "")])
    assert "<!channel>" not in posted[0]["text"] and "&lt;!channel&gt;" in posted[0]["text"]
    with running.session() as session:
        note = session.scalars(select(TimelineEvent).where(TimelineEvent.kind == "note")).one()
        assert note.text == "<!channel> see <https://evil.example|docs>"
    assert json.dumps(posted)  # posted message is plain JSON
