"""Durations with fixed timestamps, and `stats` against a hand-computed fixture on both
databases; the postmortem rendered from fixed data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from incidentbot.core import postmortem
from incidentbot.core.metrics import durations, format_duration, period_stats
from incidentbot.models import ActionItem, Incident, TimelineEvent

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def incident(n: int, severity: str, declared: datetime, *, ack: timedelta,
             mitigated: timedelta | None, resolved: timedelta | None,
             cause: str = "") -> Incident:
    return Incident(
        title=f"Incident {n}", severity=severity, status="resolved" if resolved else "mitigated",
        channel_id=f"C{n}", channel_name=f"inc-{n}", declared_by="UALICE", declared_at=declared,
        acknowledged_at=declared + ack,
        mitigated_at=declared + mitigated if mitigated is not None else None,
        resolved_at=declared + resolved if resolved is not None else None, root_cause=cause,
    )


def test_durations_and_formatting() -> None:
    one = incident(1, "SEV1", NOW, ack=2 * MIN, mitigated=None, resolved=95 * MIN)
    took = durations(one)
    assert took.acknowledge == 2 * MIN
    assert took.mitigate == 95 * MIN  # never marked mitigated: mitigated when resolved
    assert took.resolve == 95 * MIN
    assert [format_duration(v) for v in (took.acknowledge, took.resolve)] == ["2m 00s", "1h 35m"]
    assert format_duration(timedelta(days=3, hours=5)) == "3d 5h"
    assert format_duration(None) == "n/a" and format_duration(42.4) == "42s"


def test_stats_match_a_hand_computed_fixture(engine: Engine) -> None:
    day = timedelta(days=1)
    with Session(engine) as session, session.begin():
        session.add_all([
            # SEV1: ack 2 and 4 min, mitigate 30 and 50 min, resolve 60 and 120 min
            incident(1, "SEV1", NOW - 2 * day, ack=2 * MIN, mitigated=30 * MIN,
                     resolved=60 * MIN, cause="Expired TLS certificate"),
            incident(2, "SEV1", NOW - 3 * day, ack=4 * MIN, mitigated=50 * MIN,
                     resolved=120 * MIN, cause=" expired TLS certificate "),
            # SEV2: ack 10 min, never mitigated, resolved at 90 min; and one still open
            incident(3, "SEV2", NOW - 5 * day, ack=10 * MIN, mitigated=None, resolved=90 * MIN,
                     cause="Bad deploy"),
            incident(4, "SEV2", NOW - 1 * day, ack=6 * MIN, mitigated=20 * MIN, resolved=None),
            # outside a 30-day window
            incident(5, "SEV1", NOW - 45 * day, ack=60 * MIN, mitigated=None,
                     resolved=600 * MIN, cause="Expired TLS certificate"),
        ])
        session.flush()
        session.add_all([
            ActionItem(incident_id=1, text="Automate renewals", owner_id="UBOB",
                       due_date=date(2026, 12, 25), priority="P1", status="open",
                       created_by="UBOB", created_at=NOW),
            ActionItem(incident_id=3, text="Canary deploys", owner_id="UBOB",
                       due_date=date(2026, 12, 25), priority="P2", status="done",
                       created_by="UBOB", created_at=NOW),
            ActionItem(incident_id=5, text="Old item", owner_id="UBOB",
                       due_date=date(2026, 11, 1), priority="P2", status="open",
                       created_by="UBOB", created_at=NOW),
        ])
    with Session(engine) as session:
        stats = period_stats(session, 30, NOW)
    rows = {row.severity: row for row in stats.by_severity}
    assert rows["SEV1"].count == 2
    assert rows["SEV1"].mtta_s == pytest.approx(3 * 60, abs=0.01)
    assert rows["SEV1"].mttm_s == pytest.approx(40 * 60, abs=0.01)
    assert rows["SEV1"].mttr_s == pytest.approx(90 * 60, abs=0.01)
    assert rows["SEV2"].count == 2
    assert rows["SEV2"].mtta_s == pytest.approx(8 * 60, abs=0.01)
    assert rows["SEV2"].mttm_s == pytest.approx((90 + 20) / 2 * 60, abs=0.01)
    assert rows["SEV2"].mttr_s == pytest.approx(90 * 60, abs=0.01)  # open one not counted
    assert rows["SEV3"].count == 0 and rows["SEV3"].mttr_s is None
    assert stats.total == 4 and stats.open_actions == 1
    assert stats.repeat_causes == [("expired tls certificate", 2)]
    with Session(engine) as session:
        wider = period_stats(session, 60, NOW)
    assert wider.total == 5 and wider.repeat_causes == [("expired tls certificate", 3)]


def test_postmortem_from_fixed_data_is_minute_by_minute_in_utc() -> None:
    one = incident(1, "SEV2", NOW, ack=MIN, mitigated=14 * MIN, resolved=47 * MIN,
                   cause="Pool exhausted.")
    one.id, one.description, one.resolution_summary = 1, "Payments failing. Spiky.", "Restarted."
    events = [
        TimelineEvent(kind="declared", text="Incident declared", actor_id="UALICE",
                      occurred_at=NOW, is_key=False),
        TimelineEvent(kind="message", text="db is <@UBOB> fine?", actor_id="UALICE",
                      occurred_at=NOW + 3 * MIN + timedelta(seconds=59), is_key=True),
        TimelineEvent(kind="message", text="secret oops", actor_id="UBOB",
                      occurred_at=NOW + 4 * MIN, deleted_at=NOW + 5 * MIN, is_key=False),
        TimelineEvent(kind="topic_set", text="Topic set", occurred_at=NOW, is_key=False),
    ]
    data = postmortem.PostmortemInput(one, events, [], [])
    text = postmortem.render(data, names={"UALICE": "Alice", "UBOB": "Bob"}, now=NOW)
    assert "- `2026-11-25 12:03` **[key]** @Alice: db is @Bob fine?" in text
    assert "secret oops" not in text and "Topic set" not in text
    assert "| Time to acknowledge | 1m 00s |" in text
    assert "| Time to mitigate | 14m 00s |" in text and "| Time to resolve | 47m 00s |" in text
    assert ("On 2026-11-25 at 12:00 UTC a SEV2 incident was declared: Incident 1. "
            "Payments failing. Restarted. It was resolved after 47m 00s. "
            "Root cause: pool exhausted.") in text
    assert "Resolved in 47m 00s, within the SEV2 target of 24h 00m." in text
