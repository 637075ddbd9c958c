"""Resolving (and reopening) an incident; the postmortem is due 48 h or a week later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from incidentbot.core import lifecycle, timeline, updates
from incidentbot.core.errors import InvalidTransition
from incidentbot.core.severity import Severity
from incidentbot.core.status import Status
from incidentbot.core.timeline import EventKind
from incidentbot.models import Incident, utcnow

# Seeds 001/004: draft within 48 hours for SEV1-2, within a week otherwise.
POSTMORTEM_DUE = {
    Severity.SEV1: timedelta(hours=48),
    Severity.SEV2: timedelta(hours=48),
    Severity.SEV3: timedelta(days=7),
    Severity.SEV4: timedelta(days=7),
}


@dataclass(frozen=True)
class Resolution:
    """What the resolver wrote on the resolution form."""

    summary: str
    root_cause: str = ""
    customer_impact: str = ""
    follow_up_needed: bool = False


def resolve(
    session: Session, incident: Incident, resolution: Resolution, by: str,
    now: datetime | None = None,
) -> Incident:
    """Mark the incident resolved, keep what was learned, stop its update clock."""
    now = now or utcnow()
    status = Status(incident.status)
    if status in (Status.RESOLVED, Status.CLOSED):
        when = f" at {incident.resolved_at:%Y-%m-%d %H:%M} UTC" if incident.resolved_at else ""
        raise InvalidTransition(f"This incident is already {status.value}{when}.")
    lifecycle.change_status(session, incident, Status.RESOLVED, by, now)
    incident.resolution_summary = resolution.summary.strip()
    incident.root_cause = resolution.root_cause.strip()
    incident.customer_impact = resolution.customer_impact.strip()
    incident.follow_up_needed = resolution.follow_up_needed
    incident.resolved_by = by
    incident.next_update_due_at = None
    incident.postmortem_due_at = now + POSTMORTEM_DUE[Severity(incident.severity)]
    timeline.record(session, incident.id, EventKind.RESOLVED,
                    f"Resolved: {incident.resolution_summary}", actor_id=by, occurred_at=now,
                    is_key=True)
    return incident


def reopen(
    session: Session, incident: Incident, by: str, interval_minutes: float,
    now: datetime | None = None,
) -> None:
    """Undo a mistaken resolve: back to investigating, postmortem no longer due, the update
    clock restarted."""
    now = now or utcnow()
    if Status(incident.status) is not Status.RESOLVED:
        raise InvalidTransition(f"Only a resolved incident can be reopened; this one is "
                                f"{incident.status}.")
    lifecycle.change_status(session, incident, Status.INVESTIGATING, by, now)
    incident.postmortem_due_at = None
    incident.resolved_by = None
    incident.next_update_due_at = updates.due_after(now, interval_minutes)
    timeline.record(session, incident.id, EventKind.REOPENED, "Incident reopened", actor_id=by,
                    occurred_at=now, is_key=True)
