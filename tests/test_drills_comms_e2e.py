"""Drills (seed 002 §8, seed 004 game days) and communication drafts (seeds 001, 004)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from incidentbot.models import Incident
from incidentbot.slack import blocks
from tests.conftest import ALICE, BOB, RunningBot
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, answer, last_card_text
from tests.test_resolution_e2e import resolve_by_button, uploaded_postmortem
from tests.test_updates_e2e import post_update

BROADCAST = "CBROADCAST"


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"broadcast_channel": BROADCAST}


@pytest.fixture(autouse=True)
def broadcast_channel(fake) -> None:  # type: ignore[no-untyped-def]
    fake.add_channel("incidents", members=["UBOT", ALICE], channel_id=BROADCAST)


def latest(running: RunningBot) -> Incident | None:
    with running.session() as session:
        found = session.scalars(select(Incident).order_by(Incident.id.desc())).first()
        return found if found and found.card_ts else None


def test_drill_is_marked_never_broadcast_and_left_out_of_stats(running: RunningBot) -> None:
    driver, fake = running.driver, running.fake
    driver.command("declare --drill Region failover game day", user_id=ALICE,
                   channel_id=GENERAL)
    answer(running, driver.last_response_url, "drill declared in")
    drill = eventually(lambda: latest(running))
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert drill.is_drill and drill.channel_name == f"drill-{today}-region-failover-game-day"
    driver.command("note failover started", user_id=ALICE, channel_id=drill.channel_id)
    post_update(running, drill, user=ALICE)
    resolve_by_button(running, drill)
    uploaded_postmortem(running)
    bot_posts = [m for m in fake.messages(drill.channel_id) if m.get("user") == "UBOT"]
    assert len(bot_posts) >= 4
    assert all("DRILL" in str(m.get("text")) for m in bot_posts), [m["text"] for m in bot_posts]
    assert "[DRILL]" in last_card_text(running, drill)
    assert fake.channel(drill.channel_id)["topic"].startswith("DRILL · ")
    assert fake.messages(BROADCAST) == []
    driver.command("stats", user_id=ALICE, channel_id=GENERAL)
    stats = answer(running, driver.last_response_url, "Incidents in the last")
    assert "*Total:* 0" in stats


def test_drill_from_the_modal(running: RunningBot) -> None:
    driver, fake = running.driver, running.fake
    driver.command("declare", user_id=ALICE, channel_id=GENERAL)
    view = eventually(fake.last_view)
    driver.submit_view(str(view["id"]), {blocks.TITLE: "Backup restore drill",
                                         blocks.SEVERITY: "SEV2", blocks.PRIVATE: ["drill"]},
                       user_id=ALICE)
    drill = eventually(lambda: latest(running))
    assert drill.is_drill and drill.channel_name.startswith("drill-")


def test_comms_drafts_carry_the_incidents_facts(running: RunningBot) -> None:
    driver = running.driver
    driver.command("declare Checkout errors in EU", user_id=ALICE, channel_id=GENERAL)
    incident = eventually(lambda: latest(running))
    driver.command("role comms <@UBOB|bob>", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: "<@UBOB>" in last_card_text(running, incident))
    post_update(running, incident, user=ALICE)
    eventually(lambda: "Latest update" in last_card_text(running, incident))
    driver.command("comms", user_id=BOB, channel_id=incident.channel_id)
    drafts = answer(running, driver.last_response_url, "Communication drafts")
    assert "[SEV3] - [Checkout errors in EU] - [Mitigated]" in drafts
    assert "Impact: EU customers cannot pay &lt;!channel&gt;" in drafts  # escaped for Slack
    assert "Business impact:" in drafts and "Customer communication status" in drafts
    assert "[MONITORING] Checkout errors in EU" in drafts and "Next update:" in drafts
    assert "Customer email" not in drafts  # only once resolved
    resolve_by_button(running, incident)
    uploaded_postmortem(running)
    driver.command("comms", user_id=BOB, channel_id=incident.channel_id)
    after = answer(running, driver.last_response_url, "Customer email")
    assert "Subject: [Resolved] Service Disruption" in after
    assert "Rolled back deploy 41" in after and "[RESOLVED] Checkout errors in EU" in after
    assert "Current action: Resolved. Rolled back deploy 41" in after
    assert "ETA: none: resolved at" in after and "Rolling back deploy 42" not in after
    assert "Customer communication status: last status update posted" in after
    assert "[status page" not in after  # no placeholder left unfilled
