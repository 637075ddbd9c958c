"""Escalation (seed 004): primary → secondary → manager until acknowledged, across restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from incidentbot.models import Incident, Page, TimelineEvent
from incidentbot.slack import blocks
from tests.conftest import ALICE, BOB, CAROL, RunningBot, bot_running, make_settings
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, answer
from tests.test_services_e2e import CATALOG

STEP_MIN = 0.02  # 1.2 s between escalation steps


@pytest.fixture
def catalog_file(tmp_path: Path) -> str:
    path = tmp_path / "services.yaml"
    path.write_text(CATALOG)
    return str(path)


@pytest.fixture
def bot_settings(catalog_file: str) -> dict[str, object]:
    return {"services_file": catalog_file, "escalation_minutes": STEP_MIN}


def dms(fake: FakeSlack, user: str) -> list[dict[str, object]]:
    ims = [c for c in fake.channels() if c.get("is_im") and c.get("user") == user]
    return [m for c in ims for m in fake.messages(c["id"]) if "You are paged" in str(m["text"])]


def declare_for_checkout(running: RunningBot, severity: str = "SEV2") -> Incident:
    driver, fake = running.driver, running.fake
    driver.command("declare", user_id=ALICE, channel_id=GENERAL)
    view = eventually(fake.last_view)
    driver.submit_view(str(view["id"]), {blocks.TITLE: "Checkout down", blocks.SEVERITY: severity,
                                         blocks.SERVICE: "checkout"}, user_id=ALICE)

    def stored() -> Incident | None:
        with running.session() as session:
            found = session.scalars(select(Incident)).first()
            return found if found and found.card_ts else None

    return eventually(stored)


def test_escalation_walks_the_path_until_the_manager(running: RunningBot) -> None:
    incident = declare_for_checkout(running)
    running.driver.command("page", user_id=ALICE, channel_id=incident.channel_id)
    fake = running.fake
    eventually(lambda: dms(fake, BOB))
    assert dms(fake, CAROL) == []
    eventually(lambda: dms(fake, CAROL), timeout=10)
    eventually(lambda: dms(fake, ALICE), timeout=10)
    assert [len(dms(fake, u)) for u in (BOB, CAROL, ALICE)] == [1, 1, 1]
    with running.session() as session:
        paged = list(session.scalars(select(TimelineEvent.text).where(
            TimelineEvent.kind == "paged").order_by(TimelineEvent.id)))
    assert [p.split(" for ")[0] for p in paged] == [
        f"Paged <@{BOB}>", f"Paged <@{CAROL}>", f"Paged <@{ALICE}>"]


def test_acknowledgement_stops_escalation_and_feeds_mtta(running: RunningBot) -> None:
    incident = declare_for_checkout(running)
    driver, fake = running.driver, running.fake
    driver.command("page checkout", user_id=ALICE, channel_id=incident.channel_id)
    dm = eventually(lambda: dms(fake, BOB))[0]
    im = next(c["id"] for c in fake.channels() if c.get("is_im") and c.get("user") == BOB)
    with running.session() as session:
        page = session.scalars(select(Page)).one()
    driver.block_action(blocks.PAGE_ACK, user_id=BOB, channel_id=im, message_ts=str(dm["ts"]),
                        value=str(page.id))
    eventually(lambda: [m for m in fake.messages(incident.channel_id)
                        if "acknowledged the page" in str(m.get("text"))])
    time.sleep(STEP_MIN * 60 * 2)
    assert dms(fake, CAROL) == [] and dms(fake, ALICE) == []
    with running.session() as session:
        stored = session.scalars(select(Page)).one()
        assert stored.acknowledged_by == BOB and stored.next_escalation_at is None
        kinds = set(session.scalars(select(TimelineEvent.kind)))
        declared = session.get(Incident, incident.id)
        assert declared.acknowledged_at == stored.acknowledged_at  # MTTA: the page answered
        assert declared.acknowledged_at > declared.declared_at
    assert {"paged", "page_acknowledged"} <= kinds


def test_sev1_pages_manager_and_primary_at_once(running: RunningBot) -> None:
    incident = declare_for_checkout(running, severity="SEV1")
    running.driver.command("page", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: dms(running.fake, BOB) and dms(running.fake, ALICE))
    assert dms(running.fake, CAROL) == []


def test_unknown_service_is_named(running: RunningBot) -> None:
    incident = declare_for_checkout(running)
    running.driver.command("page billing", user_id=ALICE, channel_id=incident.channel_id)
    said = answer(running, running.driver.last_response_url, "I don't know the service")
    assert "checkout, search" in said


def test_escalation_survives_a_restart(database_url: str, fake: FakeSlack,
                                       catalog_file: str) -> None:
    settings = make_settings(database_url, fake, services_file=catalog_file,
                             escalation_minutes=0.05)  # 3 s
    with bot_running(settings, fake) as running:
        incident = declare_for_checkout(running)
        running.driver.command("page", user_id=ALICE, channel_id=incident.channel_id)
        eventually(lambda: dms(fake, BOB))
    time.sleep(1)  # the bot is down when the secondary falls due
    with bot_running(settings, fake):
        eventually(lambda: dms(fake, CAROL), timeout=10)
        assert len(dms(fake, BOB)) == 1


def test_the_postmortem_names_the_people_paged(running: RunningBot) -> None:
    from tests.test_resolution_e2e import resolve_by_button, uploaded_postmortem

    incident = declare_for_checkout(running)
    running.driver.command("page", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: dms(running.fake, BOB))
    resolve_by_button(running, incident)
    markdown = uploaded_postmortem(running)
    assert "Paged @Bob for checkout" in markdown and "UBOB" not in markdown
    looked_up = {c.get("user") for c in running.fake.calls_to("users.info")}
    assert looked_up <= {ALICE, BOB, CAROL}


def test_a_page_nobody_answers_is_said_repeated_then_stopped(
        database_url: str, fake: FakeSlack, catalog_file: str) -> None:
    fake.add_channel("incidents", members=["UBOT", ALICE], channel_id="CBROADCAST")
    settings = make_settings(database_url, fake, services_file=catalog_file,
                             escalation_minutes=STEP_MIN, page_repeats=1,
                             broadcast_channel="CBROADCAST")
    with bot_running(settings, fake) as running:
        incident = declare_for_checkout(running)
        running.driver.command("page", user_id=ALICE, channel_id=incident.channel_id)
        channel = incident.channel_id

        def unanswered(where: str) -> list[str]:
            return [str(m["text"]) for m in fake.messages(where)
                    if "Nobody acknowledged the page" in str(m.get("text"))]

        first = eventually(lambda: unanswered(channel), timeout=10)[0]
        assert f"<@{BOB}>" in first and f"<@{CAROL}>" in first and f"<@{ALICE}>" in first
        assert "round 2 of 2" in first
        eventually(lambda: len(dms(fake, BOB)) == 2, timeout=10)  # the path again
        final = eventually(lambda: len(unanswered(channel)) == 2 and unanswered(channel),
                           timeout=15)[1]
        assert "I have stopped paging" in final
        assert len(unanswered("CBROADCAST")) == 2
        time.sleep(STEP_MIN * 60 * 1.5)
        assert [len(dms(fake, u)) for u in (BOB, CAROL, ALICE)] == [2, 2, 2]
        with running.session() as session:
            kinds = list(session.scalars(select(TimelineEvent.kind).where(
                TimelineEvent.kind == "page_unanswered")))
        assert kinds == ["page_unanswered", "page_unanswered"]


def test_paging_stops_when_the_incident_is_resolved(running: RunningBot) -> None:
    from tests.test_resolution_e2e import resolve_by_button

    incident = declare_for_checkout(running)
    running.driver.command("page", user_id=ALICE, channel_id=incident.channel_id)
    eventually(lambda: dms(running.fake, BOB))
    resolve_by_button(running, incident)
    eventually(lambda: running.bot.ctx.incident_by_id(incident.id).status == "resolved")
    paged = [len(dms(running.fake, u)) for u in (BOB, CAROL, ALICE)]
    time.sleep(STEP_MIN * 60 * 2.5)
    assert [len(dms(running.fake, u)) for u in (BOB, CAROL, ALICE)] == paged
