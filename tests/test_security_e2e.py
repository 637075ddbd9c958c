"""Request authenticity (forged, unsigned, stale, future, replayed), authorization and
privacy, through the real HTTP path."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from incidentbot.models import Incident, TimelineEvent
from incidentbot.slack import blocks
from tests.conftest import ALICE, BOB, BOT_TOKEN, CAROL, SIGNING_SECRET, RunningBot
from tests.driver import DriverResponse
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, answer, declare, last_card_text

FORGERIES: dict[str, dict[str, object]] = {
    "forged signature": {"signature": "v0=" + "0" * 64},
    "signed with another secret": {"signature": "other"},
    "no signature headers": {"sign": False},
    "timestamp 6 minutes old": {"timestamp": lambda: int(time.time()) - 360},
    "timestamp 6 minutes ahead": {"timestamp": lambda: int(time.time()) + 360},
}


def _kwargs(driver_kwargs: dict[str, object], body_signer: Callable[[str, str], str]) -> dict:
    resolved = {k: (v() if callable(v) else v) for k, v in driver_kwargs.items()}
    if resolved.get("signature") == "other":
        resolved.pop("signature")
        resolved["secret"] = "not-the-signing-secret"
    return resolved


def _send(running: RunningBot, kind: str, incident: Incident, **kwargs: object) -> DriverResponse:
    driver = running.driver
    secret = kwargs.pop("secret", None)
    if secret:
        driver.signing_secret = str(secret)
    try:
        if kind == "command":
            return driver.command("note is this real?", user_id=ALICE,
                                  channel_id=incident.channel_id, **kwargs)  # type: ignore[arg-type]
        if kind == "event":
            event = driver.message_event(incident.channel_id, BOB, "forged?",
                                         ts="1900000000.000777")
            return driver.event(event, **kwargs)  # type: ignore[arg-type]
        return driver.block_action(blocks.CHANGE_SEVERITY, user_id=ALICE,
                                   channel_id=incident.channel_id,
                                   message_ts=incident.card_ts or "", value=str(incident.id),
                                   **kwargs)  # type: ignore[arg-type]
    finally:
        driver.signing_secret = SIGNING_SECRET


def _trace(running: RunningBot) -> tuple[int, int, int]:
    with running.session() as session:
        rows = session.scalar(select(func.count(TimelineEvent.id))) or 0
        severity_changes = session.scalar(select(func.count(TimelineEvent.id)).where(
            TimelineEvent.kind == "severity_changed")) or 0
    return rows, severity_changes, len(running.fake.calls)


@pytest.mark.parametrize("kind", ["command", "event", "interaction"])
@pytest.mark.parametrize("forgery", list(FORGERIES))
def test_unauthentic_requests_are_refused_without_trace(
    running: RunningBot, kind: str, forgery: str
) -> None:
    incident = declare(running, "Authenticity")
    time.sleep(0.3)  # let the declaration's follow-up calls settle
    before = _trace(running)
    response = _send(running, kind, incident,
                     **_kwargs(FORGERIES[forgery], running.driver.signature_for))
    assert response.status == 401
    time.sleep(0.3)
    assert _trace(running) == before


@pytest.mark.parametrize("kind", ["command", "event", "interaction"])
def test_replayed_requests_are_refused(running: RunningBot, kind: str) -> None:
    incident = declare(running, "Replays")
    driver = running.driver
    sent: list[tuple[str, dict[str, object]]] = []
    original = driver.send

    def recording_send(body: str, **kwargs: object) -> DriverResponse:
        sent.append((body, kwargs))
        return original(body, **kwargs)  # type: ignore[arg-type]

    driver.send = recording_send  # type: ignore[method-assign]
    stamp = int(time.time())
    first = _send(running, kind, incident, timestamp=stamp)
    driver.send = original  # type: ignore[method-assign]
    assert first.status == 200
    time.sleep(0.5)
    before = _trace(running)
    body, kwargs = sent[-1]
    again = driver.send(body, **kwargs)  # type: ignore[arg-type]
    assert again.status == 401
    time.sleep(0.3)
    assert _trace(running) == before


def test_only_role_holders_and_admins_run_the_incident(running: RunningBot) -> None:
    incident = declare(running, "Who may")
    driver, channel = running.driver, incident.channel_id
    for text, action in (("severity SEV1", "change the severity"),
                         ("role ic <@UBOB|bob>", "hand off incident command"),
                         ("resolve", "resolve it")):
        driver.command(text, user_id=BOB, channel_id=channel)
        refusal = answer(running, driver.last_response_url, "Sorry, only the people running")
        assert action in refusal and "<@UALICE> (Incident Commander)" in refusal
    with running.session() as session:
        stored = session.get(Incident, incident.id)
        assert stored is not None and stored.severity == "SEV3" and stored.holder("ic") == ALICE
    driver.command("role scribe <@UBOB|bob>", user_id=ALICE, channel_id=channel)
    eventually(lambda: "<@UBOB>" in last_card_text(running, incident))
    driver.command("severity SEV2", user_id=BOB, channel_id=channel)  # a role holder may
    eventually(lambda: "SEV2" in last_card_text(running, incident))


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"incident_admins": "UCAROL, S0ADMINS"}


def test_incident_admins_may_too(running: RunningBot) -> None:
    incident = declare(running, "Admin override")
    running.driver.command("severity SEV1", user_id=CAROL, channel_id=incident.channel_id)
    eventually(lambda: "SEV1" in last_card_text(running, incident))
    running.driver.command("reopen", user_id=BOB, channel_id=incident.channel_id)
    refusal = answer(running, running.driver.last_response_url, "Sorry")
    assert "or an incident admin" in refusal


def test_private_incidents_are_hidden_from_non_members(running: RunningBot) -> None:
    driver, fake = running.driver, running.fake
    declare(running, "Public one")
    driver.command("declare", user_id=ALICE, channel_id=GENERAL)
    view = eventually(fake.last_view)
    driver.submit_view(str(view["id"]), {blocks.TITLE: "Hidden breach", blocks.SEVERITY: "SEV1",
                                         blocks.PRIVATE: ["private"]}, user_id=ALICE)
    hidden = eventually(lambda: next((c for c in fake.channels() if c["is_private"]
                                      and c["name"].endswith("hidden-breach")), None))
    eventually(lambda: fake.pins(hidden["id"]))  # declared: stored, people invited, card up
    driver.command("list", user_id=BOB, channel_id=GENERAL)
    listed = answer(running, driver.last_response_url, "Public one")
    assert "Hidden breach" not in listed
    driver.command("list", user_id=ALICE, channel_id=GENERAL)
    assert "Hidden breach" in answer(running, driver.last_response_url, "Public one")
    driver.command("stats", user_id=BOB, channel_id=GENERAL)
    stats = answer(running, driver.last_response_url, "Incidents in the last")
    assert "*SEV1*: 0 incident(s)" in stats and "*SEV3*: 1 incident(s)" in stats
    driver.command("stats", user_id=ALICE, channel_id=GENERAL)
    assert "*SEV1*: 1 incident(s)" in answer(running, driver.last_response_url, "Incidents in")


def test_secrets_never_reach_logs_or_messages(
    running: RunningBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running.fake.fail_next("conversations.create", "invalid_auth")
    running.driver.command("declare Leaky", user_id=ALICE, channel_id=GENERAL)
    answer(running, running.driver.last_response_url, "invalid_auth")
    running.driver.command("declare", user_id=ALICE, channel_id=GENERAL, sign=False)
    said = json.dumps(running.fake.responses) + json.dumps(running.fake.calls)
    for secret in (BOT_TOKEN, SIGNING_SECRET):
        assert secret not in caplog.text
        assert secret not in said
