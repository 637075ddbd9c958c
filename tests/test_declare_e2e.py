"""End to end: signed HTTP requests into the running bot, the real slack_sdk against the fake
Slack, a real database (SQLite file and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from incidentbot.models import Incident, TimelineEvent
from incidentbot.slack import blocks
from tests.conftest import ACK_LIMIT_S, ALICE, BOB, CAROL, RunningBot
from tests.helpers import eventually

GENERAL = "CGENERAL"


def today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def answers(running: RunningBot, response_url: str | None = None) -> list[str]:
    """Texts the bot sent back through response URLs (all, or one command's)."""
    url_id = (response_url or "").rsplit("/", 1)[-1]
    found = []
    for posted in running.fake.responses:
        if response_url is None or str(posted.get("url_id", posted.get("id", ""))) == url_id:
            found.append(str(posted.get("text", "")) + json.dumps(posted.get("blocks", [])))
    return found


def answer(running: RunningBot, response_url: str, contains: str) -> str:
    def check() -> str:
        for text in answers(running, response_url):
            if contains in text:
                return text
        raise AssertionError(f"no answer containing {contains!r}: {answers(running)}")
    return eventually(check)


def stored_incident(running: RunningBot, channel_id: str | None = None) -> Incident:
    with running.session() as session:
        query = select(Incident)
        if channel_id:
            query = query.where(Incident.channel_id == channel_id)
        return session.scalars(query.order_by(Incident.id.desc())).first()  # type: ignore[return-value]


def timeline_kinds(running: RunningBot, incident_id: int) -> list[str]:
    with running.session() as session:
        return list(session.scalars(select(TimelineEvent.kind).where(
            TimelineEvent.incident_id == incident_id).order_by(TimelineEvent.id)))


def declare(running: RunningBot, title: str, user: str = ALICE) -> Incident:
    """Quick-declare and wait until the card is pinned; returns the stored incident."""
    response = running.driver.command(f"declare {title}", user_id=user, channel_id=GENERAL)
    assert response.status == 200 and response.latency_s < ACK_LIMIT_S
    url = running.driver.last_response_url
    answer(running, url, "incident declared in <#")
    incident = eventually(lambda: stored_incident(running))
    eventually(lambda: running.fake.pins(incident.channel_id))
    return eventually(lambda: stored_incident(running, incident.channel_id)
                      if stored_incident(running, incident.channel_id).card_ts else None)


def card_updates(running: RunningBot, incident: Incident) -> list[dict[str, Any]]:
    return [c for c in running.fake.calls_to("chat.update") if c.get("ts") == incident.card_ts]


def last_card_text(running: RunningBot, incident: Incident) -> str:
    updates = card_updates(running, incident)
    assert updates, "the card was never updated"
    raw = updates[-1].get("blocks")
    return raw if isinstance(raw, str) else json.dumps(raw)


def assert_fast_acks(running: RunningBot) -> None:
    assert running.driver.latencies, "no request was sent"
    assert max(running.driver.latencies) < ACK_LIMIT_S


def test_quick_declare_opens_channel_invites_sets_topic_and_pins_card(running: RunningBot) -> None:
    incident = declare(running, "Checkout returns 500s")
    fake = running.fake
    assert incident.channel_name == f"inc-{today()}-checkout-returns-500s"
    channel = fake.channel(incident.channel_id)
    assert channel["name"] == incident.channel_name and not channel["is_private"]
    assert ALICE in channel["members"]
    assert eventually(lambda: fake.channel(incident.channel_id)["topic"]) == \
        "SEV3 · Investigating · IC: <@UALICE>"
    pinned = fake.pins(incident.channel_id)
    assert len(pinned) == 1
    card = next(m for m in fake.messages(incident.channel_id) if m["ts"] == incident.card_ts)
    card_json = json.dumps(card["blocks"])
    for expected in ("Checkout returns 500s", "SEV3", "Investigating", "<@UALICE>",
                     blocks.ASSIGN_ROLE, blocks.CHANGE_SEVERITY, blocks.CHANGE_STATUS):
        assert expected in card_json
    assert incident.severity == "SEV3" and incident.declared_by == ALICE
    kinds = eventually(lambda: (k := timeline_kinds(running, incident.id)) and
                       "card_pinned" in k and k)
    for kind in ("declared", "channel_created", "role_assigned", "member_invited",
                 "topic_set", "card_posted", "card_pinned"):
        assert kind in kinds
    assert_fast_acks(running)


def test_name_collisions_get_numbered_suffixes(running: RunningBot) -> None:
    base = f"inc-{today()}-database-failover"
    running.fake.add_channel(base, members=[BOB])
    running.fake.add_channel(f"{base}-2", members=[BOB])
    incident = declare(running, "Database failover")
    assert incident.channel_name == f"{base}-3"
    tried = [c["name"] for c in running.fake.calls_to("conversations.create")]
    assert tried == [base, f"{base}-2", f"{base}-3"]


def test_modal_declare_with_severity_private_and_service(running: RunningBot) -> None:
    driver, fake = running.driver, running.fake
    response = driver.command("declare", user_id=BOB, channel_id=GENERAL)
    assert response.status == 200
    url = driver.last_response_url
    view = eventually(fake.last_view)
    assert view["callback_id"] == blocks.DECLARE_VIEW
    assert "Revenue directly impacted" in json.dumps(view["blocks"])
    submitted = driver.submit_view(view["id"], {
        blocks.TITLE: "Payments API latency", blocks.SEVERITY: "SEV2",
        blocks.DESCRIPTION: "p99 above 5 s", blocks.SERVICE: "payments",
        blocks.PRIVATE: ["private"],
    }, user_id=BOB)
    assert submitted.status == 200 and submitted.latency_s < ACK_LIMIT_S
    answer(running, url, "SEV2 incident declared in <#")
    incident = eventually(lambda: stored_incident(running))
    assert (incident.severity, incident.is_private, incident.service) == ("SEV2", True, "payments")
    channel = fake.channel(incident.channel_id)
    assert channel["is_private"] and BOB in channel["members"]
    assert channel["name"] == f"inc-{today()}-payments-api-latency"
    eventually(lambda: fake.pins(incident.channel_id))
    assert_fast_acks(running)


def test_modal_declare_validates_inline(running: RunningBot) -> None:
    driver, fake = running.driver, running.fake
    driver.command("declare", user_id=BOB, channel_id=GENERAL)
    view = eventually(fake.last_view)
    response = driver.submit_view(view["id"], {blocks.TITLE: "   ", blocks.SEVERITY: "SEV1"},
                                  user_id=BOB)
    assert response.status == 200
    body = response.json
    assert body["response_action"] == "errors" and blocks.TITLE in body["errors"]
    with running.session() as session:
        assert session.scalar(select(func.count(Incident.id))) == 0
    assert fake.calls_to("conversations.create") == []


def test_same_modal_submission_twice_declares_once(running: RunningBot) -> None:
    driver, fake = running.driver, running.fake
    driver.command("declare", user_id=BOB, channel_id=GENERAL)
    view = eventually(fake.last_view)
    values = {blocks.TITLE: "Cache stampede", blocks.SEVERITY: "SEV3"}
    driver.submit_view(view["id"], values, user_id=BOB)
    eventually(lambda: stored_incident(running))
    driver.submit_view(view["id"], values, user_id=BOB)
    eventually(lambda: len(answers(running, driver.last_response_url)) >= 2)
    with running.session() as session:
        assert session.scalar(select(func.count(Incident.id))) == 1


def test_role_by_command_and_ic_handoff(running: RunningBot) -> None:
    incident = declare(running, "Search is slow")
    driver, fake, channel = running.driver, running.fake, incident.channel_id
    driver.command("role scribe <@UBOB|bob>", user_id=ALICE, channel_id=channel)
    eventually(lambda: BOB in fake.channel(channel)["members"])
    eventually(lambda: "<@UBOB>" in last_card_text(running, incident))
    assert "Scribe" in last_card_text(running, incident)

    driver.command("role ic <@UCAROL|carol>", user_id=ALICE, channel_id=channel)
    handoff = eventually(lambda: next((m for m in fake.messages(channel)
                                       if "is now the incident commander" in m.get("text", "")),
                                      None))
    assert "<@UCAROL> is now the incident commander" in handoff["text"]
    assert "<@UALICE>" in handoff["text"]  # names the previous IC
    eventually(lambda: fake.channel(channel)["topic"] == "SEV3 · Investigating · IC: <@UCAROL>")
    eventually(lambda: "ic_handoff" in timeline_kinds(running, incident.id))
    stored = stored_incident(running, channel)
    assert stored.holder("ic") == CAROL and stored.holder("scribe") == BOB
    assert_fast_acks(running)


def test_role_by_button_and_modal(running: RunningBot) -> None:
    incident = declare(running, "Queue backlog")
    driver, fake = running.driver, running.fake
    response = driver.block_action(blocks.ASSIGN_ROLE, user_id=ALICE,
                                   channel_id=incident.channel_id,
                                   message_ts=incident.card_ts or "", value=str(incident.id))
    assert response.status == 200
    view = eventually(lambda: (v := fake.last_view()) and v["callback_id"] == blocks.ROLE_VIEW
                      and v)
    driver.submit_view(view["id"], {blocks.ROLE: "comms", blocks.USER: CAROL}, user_id=ALICE)
    eventually(lambda: stored_incident(running, incident.channel_id).holder("comms") == CAROL)
    eventually(lambda: "<@UCAROL>" in last_card_text(running, incident))
    assert any("Communications Lead" in m.get("text", "")
               for m in fake.messages(incident.channel_id))


def test_role_modal_refuses_a_bot_inline(running: RunningBot) -> None:
    incident = declare(running, "Queue backlog")
    driver, fake = running.driver, running.fake
    driver.block_action(blocks.ASSIGN_ROLE, user_id=ALICE, channel_id=incident.channel_id,
                        message_ts=incident.card_ts or "", value=str(incident.id))
    view = eventually(lambda: (v := fake.last_view()) and v["callback_id"] == blocks.ROLE_VIEW
                      and v)
    response = driver.submit_view(view["id"], {blocks.ROLE: "ops", blocks.USER: "UOTHERBOT"},
                                  user_id=ALICE)
    assert response.json["response_action"] == "errors"
    assert "bot" in response.json["errors"][blocks.USER]


def test_severity_and_status_by_command_update_card_and_topic(running: RunningBot) -> None:
    incident = declare(running, "Login errors")
    driver, fake, channel = running.driver, running.fake, incident.channel_id
    driver.command("severity SEV1", user_id=ALICE, channel_id=channel)
    eventually(lambda: "SEV1" in last_card_text(running, incident))
    eventually(lambda: fake.channel(channel)["topic"].startswith("SEV1 · Investigating"))
    driver.command("status mitigated", user_id=ALICE, channel_id=channel)
    eventually(lambda: "Mitigated" in last_card_text(running, incident))
    eventually(lambda: fake.channel(channel)["topic"] == "SEV1 · Mitigated · IC: <@UALICE>")
    stored = stored_incident(running, channel)
    assert stored.severity == "SEV1" and stored.status == "mitigated" and stored.mitigated_at
    kinds = timeline_kinds(running, incident.id)
    assert "severity_changed" in kinds and "status_changed" in kinds
    assert_fast_acks(running)


def test_severity_and_status_by_buttons(running: RunningBot) -> None:
    incident = declare(running, "Webhooks delayed")
    driver, fake = running.driver, running.fake
    driver.block_action(blocks.CHANGE_SEVERITY, user_id=ALICE, channel_id=incident.channel_id,
                        message_ts=incident.card_ts or "", value=str(incident.id))
    view = eventually(lambda: (v := fake.last_view()) and
                      v["callback_id"] == blocks.SEVERITY_VIEW and v)
    driver.submit_view(view["id"], {blocks.SEVERITY: "SEV2"}, user_id=ALICE)
    eventually(lambda: "SEV2" in last_card_text(running, incident))
    driver.block_action(blocks.CHANGE_STATUS, user_id=ALICE, channel_id=incident.channel_id,
                        message_ts=incident.card_ts or "", value=str(incident.id))
    view = eventually(lambda: (v := fake.last_view()) and
                      v["callback_id"] == blocks.STATUS_VIEW and v)
    driver.submit_view(view["id"], {blocks.STATUS: "identified"}, user_id=ALICE)
    eventually(lambda: "Identified" in last_card_text(running, incident))
    stored = stored_incident(running, incident.channel_id)
    assert (stored.severity, stored.status) == ("SEV2", "identified")
    assert_fast_acks(running)


def test_list_and_help(running: RunningBot) -> None:
    declare(running, "Disk full on db-3")
    driver = running.driver
    driver.command("list", user_id=BOB, channel_id=GENERAL)
    text = answer(running, driver.last_response_url, "Disk full on db-3")
    assert "SEV3" in text and "<@UALICE>" in text
    response = driver.command("help", user_id=BOB, channel_id=GENERAL)
    assert "/incident declare" in response.body and response.json["response_type"] == "ephemeral"
    response = driver.command("", user_id=BOB, channel_id=GENERAL)
    assert "/incident role" in response.body


def test_healthz(running: RunningBot) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{running.url}/healthz", timeout=5) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {
            "ok": True, "status": "up", "database": "up", "scheduler": "up", "leader": True,
            "jobs": {"pending": 0, "failed": 0, "oldest_pending_s": 0.0}}


def test_declare_form_suggests_a_severity_from_the_decision_tree(running: RunningBot) -> None:
    import urllib.parse

    driver, fake = running.driver, running.fake
    driver.command("declare", user_id=ALICE, channel_id=GENERAL)
    view = eventually(fake.last_view)
    text = json.dumps(view["blocks"])
    assert "Is the outage visible to customers?" in text  # when to declare (seed 002)
    assert "Is a critical workflow broken?" in text  # the decision tree (seed 001)
    ticked = {blocks.CRITERIA: ["q2"], blocks.TITLE: "Orders stuck"}
    payload = {
        "type": "block_actions", "team": {"id": "T0TEST", "domain": "fakeslack"},
        "user": {"id": ALICE, "username": "alice", "name": "alice", "team_id": "T0TEST"},
        "api_app_id": "A0TEST", "token": "legacy", "trigger_id": fake.mint_trigger_id(),
        "container": {"type": "view", "view_id": view["id"]},
        "view": {**view, "state": {"values": driver.view_state(view, ticked)}},
        "actions": [{"action_id": blocks.CRITERIA, "block_id": blocks.CRITERIA,
                     "type": "checkboxes", "action_ts": "1700000000.1",
                     "selected_options": [{"text": {"type": "plain_text",
                                                    "text": "Is a critical workflow broken?"},
                                           "value": "q2"}]}],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    assert driver.send(body).status == 200
    updated = eventually(lambda: (v := fake.view(view["id"])) and
                         "Suggested from your answers" in json.dumps(v["blocks"]) and v)
    select = next(b for b in updated["blocks"] if b.get("block_id", "").startswith("severity"))
    assert select["element"]["initial_option"]["value"] == "SEV2"
    response = driver.submit_view(str(view["id"]), {blocks.TITLE: "Orders stuck"},
                                  user_id=ALICE)
    assert response.status == 200 and not response.body
    incident = eventually(lambda: (i := stored_incident(running)) and i.severity == "SEV2" and i)
    eventually(lambda: fake.pins(incident.channel_id))


def test_a_role_for_someone_in_the_channel_sends_no_invite_slack_would_refuse(
        running: RunningBot) -> None:
    incident = declare(running, "Already here")
    invites = len(running.fake.calls_to("conversations.invite"))
    running.driver.command(f"role scribe <@{ALICE}|alice>", user_id=ALICE,
                           channel_id=incident.channel_id)
    eventually(lambda: any("Scribe" in str(m.get("text"))
                           for m in running.fake.messages(incident.channel_id)))
    assert len(running.fake.calls_to("conversations.invite")) == invites
