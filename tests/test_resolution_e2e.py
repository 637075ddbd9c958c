"""Resolution, the uploaded postmortem, action items and their errors, end to end."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from incidentbot.models import ActionItem, Incident, Postmortem
from incidentbot.slack import blocks
from tests.conftest import ALICE, BOB, CAROL, RunningBot
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, answer, declare, last_card_text
from tests.test_updates_e2e import post_update

BASE_TS = 1_900_000_000  # 2030-03-17 17:46:40 UTC
SECTIONS = ("## Summary", "## Impact", "## Timeline", "## Root cause", "### 5 whys",
            "## What went well", "## What could be improved", "## Action items", "## Metrics")


def open_view(running: RunningBot, callback_id: str) -> dict[str, object]:
    return eventually(lambda: (v := running.fake.last_view()) and v["callback_id"] == callback_id
                      and v)


def resolve_by_button(running: RunningBot, incident: Incident, user: str = ALICE) -> None:
    driver = running.driver
    driver.block_action(blocks.RESOLVE, user_id=user, channel_id=incident.channel_id,
                        message_ts=incident.card_ts or "", value=str(incident.id))
    view = open_view(running, blocks.RESOLVE_VIEW)
    response = driver.submit_view(str(view["id"]), {
        blocks.SUMMARY: "Rolled back deploy 41. Error rate back to baseline.",
        blocks.ROOT_CAUSE: "A config change disabled connection pooling.",
        blocks.CUSTOMER_IMPACT: "About 15% of EU checkouts failed.",
        blocks.FOLLOW_UP: ["yes"],
    }, user_id=user)
    assert response.status == 200 and not (response.json or {}).get("response_action")


def uploaded_postmortem(running: RunningBot) -> str:
    def find() -> str:
        files = [f for f in running.fake.files.values() if str(f.get("name", "")).endswith(".md")
                 and f.get("channels")]
        assert files, "no postmortem uploaded yet"
        content = files[-1]["content"]
        return content.decode() if isinstance(content, bytes) else str(content)
    return eventually(find, timeout=15)


def test_full_incident_yields_a_complete_postmortem(running: RunningBot) -> None:
    incident = declare(running, "Checkout failing in EU")
    driver, fake, channel = running.driver, running.fake, incident.channel_id
    driver.command("role scribe <@UBOB|bob>", user_id=ALICE, channel_id=channel)
    driver.command("role ic <@UCAROL|carol>", user_id=ALICE, channel_id=channel)
    eventually(lambda: "<@UCAROL>" in fake.channel(channel)["topic"])
    people = (ALICE, BOB, CAROL)
    for i in range(22):
        ts = f"{BASE_TS + i * 60}.000100"
        driver.event(driver.message_event(channel, people[i % 3], f"step {i:02d} done", ts=ts))
    driver.event(driver.message_changed_event(channel, f"{BASE_TS + 5 * 60}.000100",
                                              "step 05 done, replica promoted", CAROL))
    driver.event(driver.message_deleted_event(channel, f"{BASE_TS + 7 * 60}.000100"))
    driver.event(driver.reaction_event("reaction_added", BOB, "pushpin", channel,
                                       f"{BASE_TS + 10 * 60}.000100"))
    post_update(running, incident, status="identified", user=CAROL)
    post_update(running, incident, status="mitigated", user=CAROL)
    driver.command("action Add pooling alarm <@UBOB|bob> due 2031-01-15 P1", user_id=CAROL,
                   channel_id=channel)
    answer(running, driver.last_response_url, "Added:")
    driver.command("action Write runbook for config rollbacks <@UALICE|alice>", user_id=CAROL,
                   channel_id=channel)
    answer(running, driver.last_response_url, "Added:")

    resolve_by_button(running, incident, user=CAROL)
    markdown = uploaded_postmortem(running)
    for section in SECTIONS:
        assert section in markdown, section
    lines = [line for line in markdown.splitlines() if "step " in line]
    expected_minutes = [datetime.fromtimestamp(BASE_TS + i * 60, UTC).strftime("%Y-%m-%d %H:%M")
                        for i in range(22) if i != 7]
    assert [re.search(r"`([\d\- :]+)`", line).group(1) for line in lines] == expected_minutes  # type: ignore[union-attr]
    assert "step 05 done, replica promoted _(edited)_" in markdown
    assert "step 07" not in markdown  # deleted
    assert "**[key]** @Alice: step 10 done" in markdown or "**[key]**" in lines[9]
    assert "Add pooling alarm" in markdown and "2031-01-15" in markdown and "| P1 |" in markdown
    thirty_days = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    assert "Write runbook for config rollbacks" in markdown and thirty_days in markdown
    assert "A config change disabled connection pooling." in markdown
    assert "About 15% of EU checkouts failed." in markdown
    assert "Time to acknowledge" in markdown and "Time to resolve" in markdown
    assert "IC handoff" in markdown and "Incident Commander | @Alice → @Carol" in markdown
    summary = markdown.split("## Summary", 1)[1].split("##", 1)[0]
    assert 1 <= len(re.findall(r"[.!?](\s|$)", summary.strip())) <= 5
    eventually(lambda: _drafts(running))  # stored right after the upload
    with running.session() as session:
        stored = session.scalars(select(Postmortem)).one()
        assert stored.markdown == markdown and stored.file_id in fake.files
        resolved = session.get(Incident, incident.id)
        assert resolved is not None and resolved.status == "resolved"
        assert resolved.postmortem_due_at is not None
        assert resolved.postmortem_due_at - resolved.declared_at >= timedelta(days=6)  # SEV3
    all_clear = [m for m in fake.messages(channel) if "All clear" in m.get("text", "")]
    assert all_clear and "Rolled back deploy 41" in all_clear[0]["text"]
    assert running.bot.reminders.due_at(incident.id) is None
    eventually(lambda: "Resolved" in last_card_text(running, incident))
    assert eventually(lambda: fake.channel(channel)["topic"].startswith("SEV3 · Resolved"))


def test_resolve_twice_and_reopen(running: RunningBot) -> None:
    incident = declare(running, "Twice resolved")
    driver = running.driver
    resolve_by_button(running, incident)
    uploaded_postmortem(running)
    driver.command("resolve", user_id=ALICE, channel_id=incident.channel_id)
    answer(running, driver.last_response_url, "already resolved")
    driver.command("reopen", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "Investigating" in last_card_text(running, incident))
    with running.session() as session:
        stored = session.get(Incident, incident.id)
        assert stored is not None and stored.status == "investigating"
        assert stored.resolved_at is None and stored.postmortem_due_at is None
    driver.command("reopen", user_id=ALICE, channel_id=incident.channel_id)
    answer(running, driver.last_response_url, "Only a resolved incident can be reopened")


def test_resolve_form_submitted_after_someone_else_resolved(running: RunningBot) -> None:
    incident = declare(running, "Race to resolve")
    driver = running.driver
    driver.command("role scribe <@UBOB|bob>", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "<@UBOB>" in last_card_text(running, incident))
    driver.block_action(blocks.RESOLVE, user_id=ALICE, channel_id=incident.channel_id,
                        message_ts=incident.card_ts or "", value=str(incident.id))
    view = open_view(running, blocks.RESOLVE_VIEW)
    driver.command("status resolved", user_id=BOB, channel_id=incident.channel_id)
    eventually(lambda: "Resolved" in last_card_text(running, incident))
    response = driver.submit_view(str(view["id"]), {blocks.SUMMARY: "done"}, user_id=ALICE)
    assert "already resolved" in response.json["errors"][blocks.SUMMARY]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("action Fix it <@UBOB|bob> due 2027-02-30", "`2027-02-30` is not a date"),
        ("action Fix it <@UBOB|bob> due soon", "`soon` is not a date"),
        ("action Fix it", "Name an owner"),
        ("action <@UBOB|bob>", "Say what needs doing"),
    ],
)
def test_bad_action_items_get_a_clear_message(running: RunningBot, text: str, says: str) -> None:
    incident = declare(running, "Bad actions")
    response = running.driver.command(text, user_id=ALICE, channel_id=incident.channel_id)
    assert says in response.json["text"] and response.json["response_type"] == "ephemeral"


def test_action_due_in_the_past_and_outside_an_incident_channel(running: RunningBot) -> None:
    incident = declare(running, "Past due")
    driver = running.driver
    driver.command("action Fix it <@UBOB|bob> due 2020-01-01", user_id=ALICE,
                   channel_id=incident.channel_id)
    answer(running, driver.last_response_url, "is in the past")
    for text in ("resolve", "action Fix it <@UBOB|bob>", "actions", "postmortem"):
        driver.command(text, user_id=ALICE, channel_id=GENERAL)
        answer(running, driver.last_response_url, "works inside an incident channel")


def test_action_items_by_modal_list_and_mark_done(running: RunningBot) -> None:
    incident = declare(running, "Action modal")
    driver, fake = running.driver, running.fake
    resolve_by_button(running, incident)
    uploaded_postmortem(running)
    all_clear = eventually(lambda: [m for m in fake.messages(incident.channel_id)
                                    if "All clear" in m.get("text", "")])[0]
    driver.block_action(blocks.ADD_ACTION, user_id=ALICE, channel_id=incident.channel_id,
                        message_ts=str(all_clear["ts"]), value=str(incident.id))
    view = open_view(running, blocks.ACTION_VIEW)
    bad = driver.submit_view(str(view["id"]), {blocks.ACTION_TEXT: "Add canary",
                                               blocks.OWNER: "UOTHERBOT",
                                               blocks.DUE: "2020-01-01"}, user_id=ALICE)
    assert set(bad.json["errors"]) == {blocks.OWNER, blocks.DUE}
    due = (date.today() + timedelta(days=10)).isoformat()
    values = {blocks.ACTION_TEXT: "Add canary", blocks.OWNER: BOB, blocks.DUE: due,
              blocks.PRIORITY: "P0"}
    good = driver.submit_view(str(view["id"]), values, user_id=ALICE)
    assert good.status == 200 and not good.body, good.body
    item = eventually(lambda: _items(running))[0]
    assert (item.text, item.owner_id, item.due_date.isoformat(), item.priority) == (
        "Add canary", BOB, due, "P0")
    driver.command("actions", user_id=ALICE, channel_id=incident.channel_id)
    listed = answer(running, driver.last_response_url, "Add canary")
    assert blocks.ACTION_DONE in listed
    driver.block_action(blocks.ACTION_DONE, user_id=BOB, channel_id=incident.channel_id,
                        message_ts=str(all_clear["ts"]), value=str(item.id))
    eventually(lambda: _items(running)[0].status == "done")
    driver.command("postmortem", user_id=ALICE, channel_id=incident.channel_id)
    answer(running, driver.last_response_url, "Postmortem draft uploaded")
    eventually(lambda: len(_drafts(running)) == 2)
    with running.session() as session:
        drafts = session.scalars(select(Postmortem).order_by(Postmortem.id)).all()
        assert len(drafts) == 2 and "| P0 | Add canary |" in drafts[-1].markdown
        assert "| done |" in drafts[-1].markdown


def _items(running: RunningBot) -> list[ActionItem]:
    with running.session() as session:
        return list(session.scalars(select(ActionItem)))


def _drafts(running: RunningBot) -> list[Postmortem]:
    with running.session() as session:
        return list(session.scalars(select(Postmortem)))


def test_stats_command(running: RunningBot) -> None:
    incident = declare(running, "Counted")
    resolve_by_button(running, incident)
    uploaded_postmortem(running)
    driver = running.driver
    driver.command("stats 7", user_id=BOB, channel_id=GENERAL)
    text = answer(running, driver.last_response_url, "Incidents in the last 7 days")
    assert "*SEV3*: 1 incident(s)" in text and "*Open action items:* 0" in text
    response = driver.command("stats forever", user_id=BOB, channel_id=GENERAL)
    assert "`forever` is not a number of days" in response.json["text"]
