"""Prometheus metrics: every metric the bot exports is defined here, on one registry per bot.

`create_bot` makes one `Telemetry` and hands it to the layers that record (the HTTP server,
the job runner, the services' context and the Slack gateway); each records with one call.
Gauges that describe the database (jobs waiting or failed, open incidents) are read from it
at scrape time by `DatabaseCollector`, with two small aggregate queries. The core records
nothing. Drills are left out of the incident metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from incidentbot.core import metrics
from incidentbot.core.severity import Severity
from incidentbot.core.status import ACTIVE_STATUSES
from incidentbot.jobs import queue
from incidentbot.models import Incident

log = logging.getLogger(__name__)

PREFIX = "incidentbot"
KINDS = ("command", "action", "view_submission", "event", "other")
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LAG_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DURATION_BUCKETS = (60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0,
                    259200.0, 604800.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def request_kind(body: dict[str, Any]) -> str:
    """What a Slack request is, from its parsed body: one of `KINDS`."""
    if body.get("command"):
        return "command"
    kind = body.get("type")
    if kind in ("block_actions", "interactive_message", "block_suggestion"):
        return "action"
    if kind == "view_submission":
        return "view_submission"
    if kind == "event_callback":
        return "event"
    return "other"


class Telemetry:
    """The bot's metrics and the calls that record them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.ack_seconds = Histogram(
            f"{PREFIX}_ack_seconds", "Slack requests answered, by kind, and how long from "
            "arrival to answer (verification, replay check, ack and job stored)",
            ["kind"], buckets=ACK_BUCKETS, registry=r)
        self.refused = Counter(
            f"{PREFIX}_requests_refused", "Slack requests refused before Bolt, by HTTP status "
            "(401 bad signature or replay, 400 malformed, 413 too large)", ["status"], registry=r)
        self.slack_calls = Counter(
            f"{PREFIX}_slack_calls", "Web API calls by method and outcome (ok, or Slack's error "
            "code after retries; connection_error when Slack was unreachable)",
            ["method", "outcome"], registry=r)
        self.slack_retries = Counter(
            f"{PREFIX}_slack_retries", "Web API attempts repeated by slack_sdk's retry "
            "handlers, by method and reason (ratelimited = HTTP 429, server_error, "
            "connection_error)", ["method", "reason"], registry=r)
        self.job_runs = Counter(
            f"{PREFIX}_job_runs", "Job attempts by lazy function and outcome (done, retry, "
            "failed = dead after its last attempt, unrecorded = its end could not be stored)",
            ["function", "outcome"], registry=r)
        self.job_seconds = Histogram(
            f"{PREFIX}_job_seconds", "How long a job attempt ran, by lazy function",
            ["function"], buckets=JOB_BUCKETS, registry=r)
        self.reminders = Counter(
            f"{PREFIX}_reminders_posted", "Update reminders posted in incident channels",
            registry=r)
        self.reminder_lag = Histogram(
            f"{PREFIX}_reminder_lag_seconds", "Seconds from a reminder's due time to its post",
            buckets=LAG_BUCKETS, registry=r)
        self.declared = Counter(
            f"{PREFIX}_incidents_declared", "Incidents declared, by initial severity",
            ["severity"], registry=r)
        self.resolved = Counter(
            f"{PREFIX}_incidents_resolved", "Incidents resolved, by severity", ["severity"],
            registry=r)
        self.time_to = {
            stage: Histogram(
                f"{PREFIX}_time_to_{stage}_seconds", f"Seconds from declaration to {stage}, "
                "observed when an incident is resolved, by severity", ["severity"],
                buckets=DURATION_BUCKETS, registry=r)
            for stage in ("acknowledge", "mitigate", "resolve")
        }

    def __deepcopy__(self, memo: dict[int, Any]) -> Telemetry:
        """Shared, never copied: Bolt deep-copies each request for its lazy listeners, and
        the Web API client in it holds the retry handlers that count into this object."""
        return self

    # -- recording, one call per place ---------------------------------------------------

    def request_answered(self, body: dict[str, Any], seconds: float) -> None:
        self.ack_seconds.labels(request_kind(body)).observe(seconds)

    def request_refused(self, status: int) -> None:
        self.refused.labels(str(status)).inc()

    def slack_call(self, method: str, outcome: str) -> None:
        self.slack_calls.labels(method, outcome).inc()

    def slack_retry(self, method: str, reason: str) -> None:
        self.slack_retries.labels(method, reason).inc()

    def job_ran(self, function: str, outcome: str, seconds: float) -> None:
        self.job_runs.labels(function, outcome).inc()
        self.job_seconds.labels(function).observe(seconds)

    def reminder_posted(self, due: datetime | None, posted: datetime) -> None:
        self.reminders.inc()
        if due is not None:
            self.reminder_lag.observe(max((posted - due).total_seconds(), 0.0))

    def incident_declared(self, incident: Incident) -> None:
        if not incident.is_drill:
            self.declared.labels(incident.severity).inc()

    def incident_resolved(self, incident: Incident) -> None:
        if incident.is_drill:
            return
        self.resolved.labels(incident.severity).inc()
        took = metrics.durations(incident)
        for stage, value in (("acknowledge", took.acknowledge), ("mitigate", took.mitigate),
                             ("resolve", took.resolve)):
            if value is not None:
                self.time_to[stage].labels(incident.severity).observe(value.total_seconds())

    # -- scraping ------------------------------------------------------------------------

    def watch_database(self, sessions: sessionmaker[Session],
                       clock: Callable[[], datetime]) -> None:
        """Export the job queue and open incidents, read at each scrape."""
        self.registry.register(DatabaseCollector(sessions, clock))

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return _generate_latest(self.registry)


class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time: jobs pending and failed (the numbers
    `/healthz` shows), open incidents by severity. Nothing is exported when the database
    does not answer (the scrape itself still succeeds)."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self._sessions = sessions
        self._clock = clock

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with self._sessions() as session:
                stats = queue.stats(session, self._clock())
                open_by_severity = dict(session.execute(
                    select(Incident.severity, func.count())
                    .where(Incident.status.in_([s.value for s in ACTIVE_STATUSES]),
                           Incident.is_drill.is_(False))
                    .group_by(Incident.severity)).all())
        except SQLAlchemyError as exc:
            log.warning("Metrics: database unavailable (%s)", type(exc).__name__)
            return
        pending, failed, oldest, incidents = self._families()
        pending.add_metric([], stats.pending)
        failed.add_metric([], stats.failed)
        oldest.add_metric([], stats.oldest_pending_s)
        for severity in Severity:
            incidents.add_metric([severity.value], open_by_severity.get(severity.value, 0))
        yield from (pending, failed, oldest, incidents)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(f"{PREFIX}_jobs_pending", "Jobs waiting to run (incl. retries)"),
            GaugeMetricFamily(f"{PREFIX}_jobs_failed", "Jobs dead after their last attempt, "
                              "finished in the last day"),
            GaugeMetricFamily(f"{PREFIX}_jobs_oldest_pending_seconds",
                              "Age of the oldest pending job"),
            GaugeMetricFamily(f"{PREFIX}_open_incidents", "Open incidents by severity",
                              labels=["severity"]),
        )
