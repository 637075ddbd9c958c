"""The main incident scenario, run over HTTP and over Socket Mode: declare, messages with an
edit, a deletion and a redelivery, a status update through the modal, a reminder, resolve,
the postmortem; and the probes and metrics answering in both modes."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
from sqlalchemy import select

from incidentbot.models import Incident, TimelineEvent
from tests.conftest import ALICE, BOB, RunningBot
from tests.helpers import declared_channel, eventually
from tests.test_resolution_e2e import resolve_by_button, uploaded_postmortem
from tests.test_socket_mode_e2e import SocketBot, socket_bot, socket_mode  # noqa: F401
from tests.test_updates_e2e import post_update, reminders_in

TS = "1900000400.000100"


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"reminder_sev3_minutes": 0.03}  # a reminder 1.8 s after the declaration


def run_scenario(bot: Any, http_url: str) -> None:
    driver, fake = bot.driver, bot.fake
    channel = declared_channel(driver, "Payments timing out", ALICE)
    with bot.session() as session:
        incident = session.scalars(select(Incident)).one()
    eventually(lambda: reminders_in(bot, channel))

    message = driver.message_event(channel, BOB, "p99 latency is 8 s", ts=TS)
    assert driver.event(message, event_id="EvMain1").status == 200
    retry = driver.event(message, event_id="EvMain1", timestamp=int(time.time()) + 1,
                         headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    assert retry.status == 200
    driver.event(driver.message_changed_event(channel, TS, "p99 latency is 9 s", BOB))
    gone = "1900000401.000100"
    driver.event(driver.message_event(channel, BOB, "wrong channel, sorry", ts=gone))
    driver.event(driver.message_deleted_event(channel, gone))

    post_update(bot, incident)
    eventually(lambda: any("Rolling back deploy 42" in str(m.get("text"))
                           for m in fake.messages(channel)))
    resolve_by_button(bot, incident)
    markdown = uploaded_postmortem(bot)
    assert "p99 latency is 9 s" in markdown and "wrong channel" not in markdown

    with bot.session() as session:
        messages = session.scalars(select(TimelineEvent).where(
            TimelineEvent.incident_id == incident.id, TimelineEvent.kind == "message")).all()
        assert sorted((m.text, m.deleted_at is not None) for m in messages) == [
            ("p99 latency is 9 s", False), ("wrong channel, sorry", True)]
        assert session.get(Incident, incident.id).status == "resolved"
    probes_and_metrics(http_url)


def probes_and_metrics(url: str) -> None:
    for path in ("/livez", "/healthz", "/readyz"):
        with urllib.request.urlopen(f"{url}{path}", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read())["ok"] is True
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'incidentbot_incidents_declared_total{severity="SEV3"} 1.0' in text
    assert 'incidentbot_incidents_resolved_total{severity="SEV3"} 1.0' in text


def test_main_scenario_over_http(running: RunningBot) -> None:
    run_scenario(running, running.url)


def test_main_scenario_over_socket_mode(socket_bot: SocketBot) -> None:  # noqa: F811
    port = socket_bot.bot.http_port
    run_scenario(socket_bot, f"http://127.0.0.1:{port}")
