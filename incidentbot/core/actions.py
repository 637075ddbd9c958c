"""Action items: owner, due date (30 days by default, seed 002) and priority P0-P3."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidentbot.core import timeline
from incidentbot.core.errors import IncidentError
from incidentbot.core.timeline import EventKind
from incidentbot.models import ActionItem, Incident, utcnow

PRIORITIES = ("P0", "P1", "P2", "P3")
DEFAULT_PRIORITY = "P2"
DEFAULT_DUE = timedelta(days=30)
MAX_ACTION_TEXT = 1000


def default_due(today: date) -> date:
    return today + DEFAULT_DUE


def add_action(
    session: Session, incident: Incident, *, text: str, owner_id: str, by: str,
    due: date | None = None, priority: str = DEFAULT_PRIORITY, request_key: str | None = None,
    now: datetime | None = None,
) -> ActionItem:
    """Record an action item (once per request) and note it in the timeline."""
    now = now or utcnow()
    if request_key:
        existing = session.scalar(select(ActionItem).where(ActionItem.request_key == request_key))
        if existing:
            return existing
    text = " ".join(text.split())
    if not text:
        raise IncidentError("Describe the action item, e.g. `/incident action Add retries "
                            "to the payment client @owner`.")
    if len(text) > MAX_ACTION_TEXT:
        raise IncidentError(f"Keep an action item to {MAX_ACTION_TEXT} characters.")
    if priority not in PRIORITIES:
        raise IncidentError(f"Priority must be one of {', '.join(PRIORITIES)}.")
    if due is not None and due < now.date():
        raise IncidentError(f"The due date {due.isoformat()} is in the past; give a date from "
                            f"{now.date().isoformat()} on.")
    item = ActionItem(
        incident_id=incident.id, text=text, owner_id=owner_id,
        due_date=due or default_due(now.date()), priority=priority, status="open",
        created_by=by, created_at=now, request_key=request_key,
    )
    session.add(item)
    session.flush()
    timeline.record(session, incident.id, EventKind.ACTION_ADDED,
                    f"Action item {item.priority}: {text} (owner <@{owner_id}>, due "
                    f"{item.due_date.isoformat()})", actor_id=by, occurred_at=now,
                    data={"action_id": item.id})
    return item


def complete_action(
    session: Session, action_id: int, by: str, now: datetime | None = None
) -> ActionItem:
    """Mark an action item done (idempotent)."""
    item = session.get(ActionItem, action_id)
    if item is None:
        raise IncidentError("That action item no longer exists.")
    if item.status != "done":
        item.status = "done"
        item.done_at = now or utcnow()
        item.done_by = by
        timeline.record(session, item.incident_id, EventKind.ACTION_DONE,
                        f"Action item done: {item.text}", actor_id=by, occurred_at=item.done_at,
                        data={"action_id": item.id})
    return item


def actions_for(session: Session, incident_id: int) -> list[ActionItem]:
    """The incident's action items: open ones first, then by priority and due date."""
    query = (
        select(ActionItem).where(ActionItem.incident_id == incident_id)
        .order_by(ActionItem.status.desc(), ActionItem.priority, ActionItem.due_date,
                  ActionItem.id)
    )
    return list(session.scalars(query))
