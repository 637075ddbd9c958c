"""The durable queue of work after an ack: a poison job never stops the others, failures
show in /healthz and to admins, and malformed requests are refused before any work."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from incidentbot.jobs import queue
from incidentbot.models import Job
from tests.conftest import ALICE, RunningBot
from tests.helpers import declared_channel, eventually
from tests.test_declare_e2e import GENERAL, answer


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"job_retry_seconds": 0.05, "incident_admins": ALICE}


def health(running: RunningBot) -> dict[str, object]:
    with urllib.request.urlopen(f"{running.url}/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


def add_poison_job(running: RunningBot) -> int:
    """A job whose stored request no longer reads (an older version's, say): it raises
    every time it runs."""
    now = datetime.now(UTC)
    with running.session() as session:
        job_id = session.execute(insert(Job).values(
            dedupe_key="poison", function="run_command", body="{not json",
            content_type="application/json", mode="http", priority=queue.FIRST,
            state=queue.PENDING, attempts=0, received_at=now, run_after=now,
        ).returning(Job.id)).scalar_one()
        session.commit()
    running.bot.jobs.wake()
    return int(job_id)


def test_a_poison_job_is_dead_lettered_and_everything_else_runs(running: RunningBot) -> None:
    poison = add_poison_job(running)
    channel = declared_channel(running.driver, "Works beside poison", ALICE)
    assert channel

    def dead() -> Job | None:
        with running.session() as session:
            job = session.get(Job, poison)
            return job if job is not None and job.state == queue.FAILED else None

    job = eventually(dead, timeout=15)
    assert job.attempts == queue.MAX_ATTEMPTS
    assert "Malformed" in (job.error or "")
    report = health(running)
    assert report["status"] == "degraded" and report["ok"] is True
    assert report["jobs"] == {"pending": 0, "failed": 1, "oldest_pending_s": 0.0}
    declared_channel(running.driver, "Still works after", ALICE)  # later work still runs

    running.driver.command("admin jobs", user_id=ALICE, channel_id=GENERAL)
    listed = answer(running, running.driver.last_response_url, "Jobs")
    assert f"#{poison}" in json.dumps(listed)
    running.driver.command(f"admin retry {poison}", user_id=ALICE, channel_id=GENERAL)
    answer(running, running.driver.last_response_url, f"Job #{poison} will run again")


def test_only_admins_see_jobs(running: RunningBot) -> None:
    running.driver.command("admin jobs", user_id="UBOB", channel_id=GENERAL)
    answer(running, running.driver.last_response_url, "Only the people in INCIDENT_ADMINS")


@pytest.mark.parametrize("body", [
    {"type": "event_callback", "event": {"type": "message", "channel": "C1", "ts": "1.2",
                                         "user": "UBOB", "text": ["a", "list"]}},
    {"type": "event_callback", "event": {"type": "message", "channel": "C1", "ts": "1.2",
                                         "user": {"id": "UBOB"}, "text": "hi"}},
])
def test_a_malformed_signed_event_is_refused_and_nothing_stops(
        running: RunningBot, body: dict[str, object]) -> None:
    response = running.driver.send(json.dumps({**body, "event_id": "Ev1", "team_id": "T1"}),
                                   content_type="application/json")
    assert response.status == 400
    declared_channel(running.driver, "After the malformed event", ALICE)

    def all_done() -> bool:
        with running.session() as session:
            states = session.scalars(select(Job.state)).all()
        return bool(states) and set(states) == {queue.DONE}

    eventually(all_done)


def test_unsigned_malformed_bodies_get_401(running: RunningBot) -> None:
    for body in ('{"type": "event_callback", "event": {', "payload=%7B", "\x00\xff"):
        assert running.driver.send(body, sign=False).status == 401


@pytest.mark.parametrize("payload", [
    "payload=not-json",
    'payload={"type": "block_actions", "user": {"id": "UALICE"}, "actions": []}',
    'payload={"type": "view_submission", "user": {"id": "UALICE"}, "view": "a string"}',
])
def test_signed_malformed_payloads_get_400(running: RunningBot, payload: str) -> None:
    assert running.driver.send(payload).status == 400


def test_a_command_that_says_payload_is_still_a_command(running: RunningBot) -> None:
    running.driver.command("declare payload size limit hit", user_id=ALICE, channel_id=GENERAL)
    eventually(lambda: any(c["name"].endswith("payload-size-limit-hit")
                           for c in running.fake.channels()))


def test_socket_mode_work_is_stored_as_a_job_and_runs(running: RunningBot) -> None:
    """What the Socket Mode adapter hands Bolt (a payload dict, no signature): a command's
    work is a job like any other, rebuilt from the stored payload when it runs."""
    from slack_bolt import BoltRequest

    command = {"command": "/incident", "text": "declare Socket mode works", "user_id": ALICE,
               "channel_id": GENERAL, "team_id": "T1", "trigger_id": "1.2.socket",
               "response_url": "", "api_app_id": "A1", "token": "x"}
    answer_ = running.bot.app.dispatch(BoltRequest(body=command, mode="socket_mode"))
    assert answer_.status == 200
    eventually(lambda: any(c["name"].endswith("socket-mode-works")
                           for c in running.fake.channels()))
    with running.session() as session:
        assert session.scalars(select(Job.mode)).all() == ["socket_mode"]
