"""Alerts in: Alertmanager (webhook v4) and a generic webhook, with a bearer token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from incidentbot.models import Incident
from incidentbot.slack import blocks
from tests.conftest import ALICE, BOB, CAROL, RunningBot, bot_running, make_settings
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.test_services_e2e import CATALOG

TOKEN = "alert-token-123"


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"alert_webhook_token": TOKEN}


def alertmanager(status: str = "firing", *, instance: str = "app:8080",
                 group_key: str = '{}:{alertname="TargetDown"}',
                 starts: str = "2025-06-01T11:10:00Z") -> dict[str, Any]:
    """Seed 003's incident: Prometheus' TargetDown alert, as Alertmanager sends it."""
    alert = {
        "status": status,
        "labels": {"alertname": "TargetDown", "job": "app", "instance": instance,
                   "severity": "critical", "service": "app"},
        "annotations": {"summary": "Target app is down",
                        "description": f"{instance} has not answered scrapes for 1m"},
        "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph", "fingerprint": "a1b2c3",
    }
    return {
        "version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": status,
        "receiver": "incidentbot", "groupLabels": {"alertname": "TargetDown"},
        "commonLabels": {"alertname": "TargetDown", "severity": "critical"},
        "commonAnnotations": {"summary": "Target app is down"},
        "externalURL": "http://alertmanager:9093", "alerts": [alert],
    }


def post(running: RunningBot, path: str, payload: object,
         token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{running.url}{path}", data=json.dumps(payload).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"{}")


def incidents(running: RunningBot) -> list[Incident]:
    with running.session() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)))


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_wrong_or_missing_token_is_refused_and_nothing_stored(
    running: RunningBot, token: str | None
) -> None:
    status, _ = post(running, "/alerts/alertmanager", alertmanager(), token=token)
    assert status == 401
    assert incidents(running) == [] and running.fake.calls_to("conversations.create") == []


def test_firing_group_declares_once_repeats_attach_and_resolved_offers_a_button(
    running: RunningBot
) -> None:
    status, body = post(running, "/alerts/alertmanager", alertmanager())
    assert (status, body["result"]) == (200, "declared")
    [incident] = incidents(running)
    assert (incident.title, incident.severity, incident.declared_by) == (
        "Target app is down", "SEV1", "Alertmanager")
    assert incident.holder("ic") is None and incident.acknowledged_at is None
    fake = running.fake
    eventually(lambda: fake.pins(incident.channel_id))
    posted = [m for m in fake.messages(incident.channel_id) if "Firing" in m.get("text", "")]
    assert len(posted) == 1 and "app:8080 has not answered scrapes" in posted[0]["text"]
    assert post(running, "/alerts/alertmanager", alertmanager())[1]["result"] == "duplicate"
    second = alertmanager(instance="app:8081")
    assert post(running, "/alerts/alertmanager", second)[1]["result"] == "attached"
    status, body = post(running, "/alerts/alertmanager", alertmanager("resolved"))
    assert body["result"] == "resolved notice posted"
    resolved = eventually(lambda: [m for m in fake.messages(incident.channel_id)
                                   if "Resolved" in m.get("text", "")])
    assert blocks.RESOLVE in json.dumps(resolved[0]["blocks"])
    assert len(incidents(running)) == 1 and incidents(running)[0].status == "investigating"


def test_alert_storm_makes_one_incident(running: RunningBot) -> None:
    payloads = [alertmanager(instance=f"app:{8000 + i % 7}") for i in range(200)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda p: post(running, "/alerts/alertmanager", p), payloads))
    assert all(status == 200 for status, _ in results)
    assert [body["result"] for _, body in results].count("declared") == 1
    with running.session() as session:
        assert session.scalar(select(func.count(Incident.id))) == 1
    created = running.fake.calls_to("conversations.create")
    assert len(created) == 1


def test_generic_webhook_and_bad_payloads(running: RunningBot) -> None:
    status, body = post(running, "/alerts/webhook", {
        "title": "Checkout latency p99 > 2s", "severity": "SEV2", "service": "checkout",
        "dedupe_key": "checkout-latency"})
    assert (status, body["result"]) == (200, "declared")
    assert post(running, "/alerts/webhook", {
        "title": "Checkout latency p99 > 2s", "severity": "SEV2",
        "dedupe_key": "checkout-latency"})[1]["result"] == "duplicate"
    [incident] = incidents(running)
    assert (incident.severity, incident.service) == ("SEV2", "checkout")
    assert post(running, "/alerts/webhook", {"title": "no key"})[0] == 400
    assert post(running, "/alerts/alertmanager", {"nonsense": True})[0] == 400


def test_anyone_may_take_command_of_an_alert_incident(running: RunningBot) -> None:
    post(running, "/alerts/alertmanager", alertmanager())
    [incident] = incidents(running)
    running.driver.command("role ic <@UBOB|bob>", user_id="UBOB", channel_id=incident.channel_id)
    eventually(lambda: incidents(running)[0].holder("ic") == "UBOB")
    assert incidents(running)[0].acknowledged_at is not None  # feeds MTTA


@pytest.mark.parametrize(("path", "payload", "names"), [
    ("/alerts/webhook", {"title": ["x"], "dedupe_key": "k"}, "title"),
    ("/alerts/webhook", {"title": "Disk full", "dedupe_key": 7}, "dedupe_key"),
    ("/alerts/webhook", {"title": "Disk full", "dedupe_key": "k", "status": "on fire"},
     "status"),
    ("/alerts/alertmanager", {"groupKey": "g", "alerts": "not a list"}, "alerts"),
    ("/alerts/alertmanager", {"groupKey": "g", "status": "firing", "alerts": [
        {"labels": {"alertname": "X", "severity": 1}}]}, "alerts.0.labels.severity"),
    ("/alerts/alertmanager", {"groupKey": ["g"], "alerts": []}, "groupKey"),
])
def test_wrong_types_are_refused_naming_the_field_and_nothing_is_created(
        running: RunningBot, path: str, payload: dict[str, object], names: str) -> None:
    status, body = post(running, path, payload)
    assert status == 400 and names in body["error"]
    assert incidents(running) == []
    assert running.fake.calls_to("conversations.create") == []


def test_the_alert_post_links_its_runbook_graph_and_alertmanager(running: RunningBot) -> None:
    payload = alertmanager()
    payload["alerts"][0]["annotations"]["runbook_url"] = "https://runbooks.example.com/app"
    assert post(running, "/alerts/alertmanager", payload)[0] == 200
    [incident] = incidents(running)
    posted = eventually(lambda: next((m for m in running.fake.messages(incident.channel_id)
                                      if "Firing" in str(m.get("text"))), None))
    assert "<https://runbooks.example.com/app|Runbook>" in posted["text"]
    assert "<http://prometheus:9090/graph|Graph>" in posted["text"]
    assert "<http://alertmanager:9093|Alertmanager>" in posted["text"]


@pytest.mark.parametrize("auto_page", [True, False])
def test_a_sev1_alert_for_a_catalog_service_pages_primary_and_manager_at_once(
        database_url: str, fake: FakeSlack, tmp_path: Path, auto_page: bool) -> None:
    catalog = tmp_path / "services.yaml"
    catalog.write_text(CATALOG)
    settings = make_settings(database_url, fake, alert_webhook_token=TOKEN,
                             services_file=str(catalog), auto_page=auto_page)
    payload = alertmanager()
    payload["alerts"][0]["labels"]["service"] = "checkout"
    with bot_running(settings, fake) as running:
        assert post(running, "/alerts/alertmanager", payload)[0] == 200
        [incident] = incidents(running)
        assert (incident.severity, incident.service) == ("SEV1", "checkout")
        if auto_page:
            eventually(lambda: paged_dms(fake, BOB) and paged_dms(fake, ALICE))
            assert paged_dms(fake, CAROL) == []  # the secondary waits
        else:
            time.sleep(1.0)
            assert paged_dms(fake, BOB) == [] and paged_dms(fake, ALICE) == []


def paged_dms(fake: FakeSlack, user: str) -> list[dict[str, object]]:
    ims = [c for c in fake.channels() if c.get("is_im") and c.get("user") == user]
    return [m for c in ims for m in fake.messages(c["id"]) if "You are paged" in str(m["text"])]


def test_the_paged_person_can_acknowledge_and_take_command(
        database_url: str, fake: FakeSlack, tmp_path: Path) -> None:
    catalog = tmp_path / "services.yaml"
    catalog.write_text(CATALOG)
    settings = make_settings(database_url, fake, alert_webhook_token=TOKEN,
                             services_file=str(catalog))
    payload = alertmanager()
    payload["alerts"][0]["labels"]["service"] = "checkout"
    with bot_running(settings, fake) as running:
        assert post(running, "/alerts/alertmanager", payload)[0] == 200
        [incident] = incidents(running)
        dm = eventually(lambda: paged_dms(fake, BOB))[0]
        buttons = [e["action_id"] for b in dm["blocks"] if b["type"] == "actions"
                   for e in b["elements"]]
        assert buttons == [blocks.PAGE_ACK, blocks.PAGE_ACK_COMMAND]  # nobody commands yet
        page_id = next(e["value"] for b in dm["blocks"] if b["type"] == "actions"
                       for e in b["elements"])
        im = next(c["id"] for c in fake.channels() if c.get("is_im") and c.get("user") == BOB)
        running.driver.block_action(blocks.PAGE_ACK_COMMAND, user_id=BOB, channel_id=im,
                                    message_ts=str(dm["ts"]), value=str(page_id))
        eventually(lambda: running.bot.ctx.incident_by_id(incident.id).holder("ic") == BOB)
        eventually(lambda: any("acknowledged the page" in str(m.get("text"))
                               for m in fake.messages(incident.channel_id)))
