"""Status updates and the update-reminder clock.

The clock lives in `Incident.next_update_due_at`: an update, a snooze or a severity change
moves it; a reminder that falls due is claimed once (by its due time) so that it is posted
once even when the scheduler runs it again after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from incidentbot.core import lifecycle, timeline
from incidentbot.core.errors import InvalidTransition
from incidentbot.core.status import ACTIVE_STATUSES, Status
from incidentbot.core.timeline import EventKind
from incidentbot.models import Incident, StatusUpdate, TimelineEvent, utcnow

MAX_NEXT_UPDATE_MINUTES = 24 * 60
CLOCK_TOLERANCE = timedelta(milliseconds=500)  # a scheduler may wake a hair early


@dataclass(frozen=True)
class UpdateRequest:
    """What someone filled in on the status-update form."""

    author_id: str
    status: Status
    impact: str
    current_action: str
    eta: str = ""
    next_update_minutes: float | None = None
    request_key: str | None = None


@dataclass(frozen=True)
class ReminderOutcome:
    """What a due reminder should do: post (and maybe escalate), or nothing."""

    post: bool
    escalate: bool = False
    minutes_without_update: int = 0
    claim_key: str | None = None


def due_after(anchor: datetime, interval_minutes: float) -> datetime | None:
    """When the next update is due after `anchor`, or None if this severity has no reminders."""
    return None if interval_minutes <= 0 else anchor + timedelta(minutes=interval_minutes)


def last_activity(incident: Incident) -> datetime:
    """The last update, or the declaration when there has been none."""
    return incident.last_update_at or incident.declared_at


def post_update(
    session: Session, incident: Incident, request: UpdateRequest, *, interval_minutes: float,
    now: datetime | None = None,
) -> StatusUpdate:
    """Record an update, apply its status, and restart the reminder clock."""
    now = now or utcnow()
    existing = find_update(session, request.request_key)
    if existing:
        return existing
    if not Status(incident.status).is_open:
        raise InvalidTransition(f"The incident is {incident.status}; updates are for open ones.")
    if request.status.value != incident.status:
        lifecycle.change_status(session, incident, request.status, request.author_id, now)
    minutes = request.next_update_minutes or interval_minutes
    next_at = due_after(now, minutes) if Status(incident.status).is_open else None
    update = StatusUpdate(
        incident_id=incident.id, author_id=request.author_id, severity=incident.severity,
        status=incident.status, impact=request.impact.strip(),
        current_action=request.current_action.strip(), eta=request.eta.strip(),
        next_update_at=next_at, posted_at=now, request_key=request.request_key,
    )
    session.add(update)
    session.flush()
    incident.last_update_at = now
    incident.escalated_at = None
    incident.next_update_due_at = next_at
    timeline.record(
        session, incident.id, EventKind.UPDATE_POSTED,
        f"Update: {update.status} · Impact: {update.impact} · Action: {update.current_action}",
        actor_id=request.author_id, occurred_at=now, is_key=True,
        data={"update_id": update.id},
    )
    return update


def find_update(session: Session, request_key: str | None) -> StatusUpdate | None:
    """The update already made from this request (a redelivered form), if any."""
    if not request_key:
        return None
    return session.scalar(select(StatusUpdate).where(StatusUpdate.request_key == request_key))


def set_update_message(session: Session, update_id: int, ts: str) -> None:
    update = session.get(StatusUpdate, update_id)
    if update is not None:
        update.message_ts = ts


def latest_update(session: Session, incident_id: int) -> StatusUpdate | None:
    return session.scalar(
        select(StatusUpdate).where(StatusUpdate.incident_id == incident_id)
        .order_by(StatusUpdate.posted_at.desc(), StatusUpdate.id.desc()).limit(1))


def start_clock(incident: Incident, interval_minutes: float) -> None:
    """At declaration: the first update is due one interval after it."""
    incident.next_update_due_at = due_after(incident.declared_at, interval_minutes)


def replan(incident: Incident, interval_minutes: float, now: datetime | None = None) -> None:
    """After a severity change: one new interval after the last update, at once if passed."""
    now = now or utcnow()
    due = due_after(last_activity(incident), interval_minutes)
    incident.next_update_due_at = None if due is None else max(due, now)


def snooze(
    session: Session, incident: Incident, by: str, interval_minutes: float,
    now: datetime | None = None,
) -> datetime | None:
    """Push the next reminder one interval from now."""
    now = now or utcnow()
    incident.next_update_due_at = due_after(now, interval_minutes)
    timeline.record(session, incident.id, EventKind.SNOOZED,
                    f"Update reminder snoozed for {interval_minutes:g} minutes", actor_id=by,
                    occurred_at=now)
    return incident.next_update_due_at


def claim_reminder(
    session: Session, incident: Incident, *, interval_minutes: float, now: datetime | None = None,
) -> ReminderOutcome:
    """Decide, once per due time, whether a reminder is posted and whether it escalates."""
    now = now or utcnow()
    due = incident.next_update_due_at
    if due is None or interval_minutes <= 0 or not Status(incident.status).is_open:
        return ReminderOutcome(post=False)
    if due > now + CLOCK_TOLERANCE:
        return ReminderOutcome(post=False)  # the clock moved (update, snooze) since planning
    claim_key = f"reminder:{due.isoformat()}"
    claimed = timeline.record(
        session, incident.id, EventKind.REMINDER, "Update reminder posted", occurred_at=now,
        dedupe_key=claim_key, data={"due_at": due.isoformat()},
    )
    if claimed is None:
        return ReminderOutcome(post=False)
    silent = now - last_activity(incident)
    escalate = incident.escalated_at is None and silent >= timedelta(minutes=2 * interval_minutes)
    if escalate:
        incident.escalated_at = now
        timeline.record(session, incident.id, EventKind.ESCALATION,
                        f"No update for {int(silent.total_seconds() // 60)} minutes: escalated",
                        occurred_at=now, is_key=True, dedupe_key=f"escalation:{due.isoformat()}")
    incident.next_update_due_at = due_after(now, interval_minutes)
    return ReminderOutcome(post=True, escalate=escalate, claim_key=claim_key,
                           minutes_without_update=int(silent.total_seconds() // 60))


RETRY_AFTER = timedelta(seconds=30)


def release_reminder(
    session: Session, incident: Incident, outcome: ReminderOutcome, now: datetime | None = None,
    retry_after: timedelta = RETRY_AFTER,
) -> None:
    """Undo a claim whose reminder could not be posted, and make it due again shortly."""
    now = now or utcnow()
    if outcome.claim_key:
        escalation_key = outcome.claim_key.replace("reminder:", "escalation:", 1)
        session.execute(delete(TimelineEvent).where(
            TimelineEvent.incident_id == incident.id,
            TimelineEvent.dedupe_key.in_([outcome.claim_key, escalation_key])))
    if outcome.escalate:
        incident.escalated_at = None
    if Status(incident.status).is_open:
        incident.next_update_due_at = now + retry_after


def mark_reminder_posted(session: Session, incident_id: int, claim_key: str, ts: str) -> None:
    """Note that a claimed reminder reached the channel (what recovery looks at)."""
    event = session.scalar(select(TimelineEvent).where(
        TimelineEvent.incident_id == incident_id, TimelineEvent.dedupe_key == claim_key))
    if event is not None:
        event.slack_ts = ts
        event.data = {**(event.data or {}), "posted": True}


def unposted_reminders(session: Session) -> list[TimelineEvent]:
    """Reminders claimed but never confirmed posted (the process died in between)."""
    events = session.scalars(select(TimelineEvent).where(
        TimelineEvent.kind == EventKind.REMINDER.value, TimelineEvent.slack_ts.is_(None)))
    return [e for e in events if not (e.data or {}).get("posted")]


def stale_incidents(session: Session, now: datetime, after: timedelta) -> list[Incident]:
    """Open incidents with no timeline activity (nudges aside) for `after`, not yet nudged
    in that time either."""
    cutoff = now - after
    last_activity_at = (
        select(TimelineEvent.incident_id, func.max(TimelineEvent.occurred_at).label("at"))
        .where(TimelineEvent.kind != EventKind.NUDGED.value)
        .group_by(TimelineEvent.incident_id).subquery())
    last_nudge = (
        select(TimelineEvent.incident_id, func.max(TimelineEvent.occurred_at).label("at"))
        .where(TimelineEvent.kind == EventKind.NUDGED.value)
        .group_by(TimelineEvent.incident_id).subquery())
    query = (
        select(Incident)
        .join(last_activity_at, last_activity_at.c.incident_id == Incident.id)
        .outerjoin(last_nudge, last_nudge.c.incident_id == Incident.id)
        .where(Incident.status.in_([s.value for s in ACTIVE_STATUSES]),
               last_activity_at.c.at < cutoff,
               (last_nudge.c.at.is_(None)) | (last_nudge.c.at < cutoff))
    )
    return list(session.scalars(query))
