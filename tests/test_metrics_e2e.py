"""`GET /metrics`: the counters, histograms and gauges after a real incident, end to end."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from incidentbot.telemetry import Telemetry
from tests.conftest import ALICE, BOB, RunningBot
from tests.helpers import eventually
from tests.test_declare_e2e import declare
from tests.test_resolution_e2e import resolve_by_button, uploaded_postmortem
from tests.test_updates_e2e import post_update, reminders_in

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def bot_settings() -> dict[str, object]:
    return {"reminder_sev3_minutes": 0.03}  # a reminder 1.8 s after the declaration


def scrape(running: RunningBot) -> tuple[Samples, str]:
    with urllib.request.urlopen(f"{running.url}/metrics", timeout=5) as response:
        assert response.status == 200
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, content_type


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when it does not exist (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def test_metrics_after_a_full_incident(running: RunningBot) -> None:
    driver = running.driver
    before, content_type = scrape(running)
    assert content_type.startswith("text/plain")
    assert value(before, "incidentbot_open_incidents", severity="SEV3") == 0

    incident = declare(running, "Checkout failing in EU")  # command
    eventually(lambda: reminders_in(running, incident.channel_id), timeout=15)
    during, _ = scrape(running)
    assert value(during, "incidentbot_open_incidents", severity="SEV3") == 1
    assert value(during, "incidentbot_incidents_declared_total", severity="SEV3") == 1

    driver.event(driver.message_event(incident.channel_id, BOB, "Rolling back deploy 42"))
    post_update(running, incident)  # card button (action) and the modal (view_submission)
    resolve_by_button(running, incident, user=ALICE)  # the same again
    uploaded_postmortem(running)
    refused = driver.send("command=%2Fincident", signature="v0=bad")
    assert refused.status == 401

    def settled() -> Samples:
        samples, _ = scrape(running)
        assert value(samples, "incidentbot_time_to_resolve_seconds_count", severity="SEV3") == 1
        assert value(samples, "incidentbot_jobs_pending") == 0
        return samples
    after = eventually(settled, timeout=15)

    # requests, by kind, and the refused one
    assert value(after, "incidentbot_ack_seconds_count", kind="command") >= 1
    assert value(after, "incidentbot_ack_seconds_count", kind="event") >= 1
    assert value(after, "incidentbot_ack_seconds_count", kind="action") >= 2
    assert value(after, "incidentbot_ack_seconds_count", kind="view_submission") >= 2
    assert total(after, "incidentbot_ack_seconds_count") >= 6
    assert value(after, "incidentbot_ack_seconds_bucket", kind="command", le="3.0") == \
        value(after, "incidentbot_ack_seconds_count", kind="command")
    assert value(after, "incidentbot_requests_refused_total", status="401") == 1

    # Web API calls, as the fake Slack saw them
    fake = running.fake
    assert value(after, "incidentbot_slack_calls_total", method="conversations.create",
                 outcome="ok") == 1
    assert value(after, "incidentbot_slack_calls_total", method="pins.add", outcome="ok") == 1
    assert value(after, "incidentbot_slack_calls_total", method="chat.postMessage",
                 outcome="ok") == len(fake.calls_to("chat.postMessage"))
    assert value(after, "incidentbot_slack_calls_total", method="files_upload_v2",
                 outcome="ok") == 1
    assert total(after, "incidentbot_slack_retries_total") == 0

    # jobs
    assert value(after, "incidentbot_job_runs_total", function="run_command",
                 outcome="done") >= 1
    assert total(after, "incidentbot_job_runs_total", outcome="done") >= 4
    assert total(after, "incidentbot_job_runs_total", outcome="failed") == 0
    assert total(after, "incidentbot_job_seconds_count") == \
        total(after, "incidentbot_job_runs_total")
    assert value(after, "incidentbot_jobs_failed") == 0

    # reminders
    posted = value(after, "incidentbot_reminders_posted_total")
    assert posted >= 1 and value(after, "incidentbot_reminder_lag_seconds_count") == posted

    # incidents
    assert value(after, "incidentbot_incidents_declared_total", severity="SEV3") == 1
    assert value(after, "incidentbot_incidents_resolved_total", severity="SEV3") == 1
    assert value(after, "incidentbot_open_incidents", severity="SEV3") == 0
    for stage in ("acknowledge", "mitigate", "resolve"):
        name = f"incidentbot_time_to_{stage}_seconds"
        assert value(after, f"{name}_count", severity="SEV3") == 1, stage
        assert 0 <= value(after, f"{name}_sum", severity="SEV3") < 120, stage


def test_rate_limits_count_as_retries_then_one_good_call(running: RunningBot) -> None:
    running.fake.fail_next("conversations.create", "ratelimited", status=429, retry_after=1)
    declare(running, "Rate limited create")
    samples, _ = scrape(running)
    assert value(samples, "incidentbot_slack_retries_total", method="conversations.create",
                 reason="ratelimited") == 1
    assert value(samples, "incidentbot_slack_calls_total", method="conversations.create",
                 outcome="ok") == 1
    assert value(samples, "incidentbot_slack_calls_total", method="conversations.create",
                 outcome="ratelimited") == 0


def test_each_bot_has_its_own_registry() -> None:
    first, second = Telemetry(), Telemetry()
    first.slack_call("chat.postMessage", "ok")
    assert b'method="chat.postMessage"' in first.exposition()
    assert b'method="chat.postMessage"' not in second.exposition()
