"""Escalation (seed 004): primary, then secondary, then manager, `ESCALATION_MINUTES` apart,
until someone acknowledges; a SEV1 goes to the manager and the primary at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidentbot.core import timeline
from incidentbot.core.errors import IncidentError
from incidentbot.core.services import Service
from incidentbot.core.severity import Severity
from incidentbot.core.timeline import EventKind
from incidentbot.models import Incident, Page, utcnow


@dataclass(frozen=True)
class PageStep:
    """Who to notify now, and when to escalate next (None: end of the path)."""

    page: Page
    notify: list[str]
    escalate_at: datetime | None


def escalation_steps(service: Service, severity: Severity) -> list[list[str]]:
    path = service.escalation
    steps = [[u] for u in (path.primary, path.secondary, path.manager) if u]
    if severity is Severity.SEV1 and path.manager and path.primary:
        steps = [[path.primary, path.manager], *([[path.secondary]] if path.secondary else [])]
    return steps


def start_page(
    session: Session, incident: Incident, service: Service, by: str, minutes: float,
    now: datetime | None = None,
) -> PageStep:
    now = now or utcnow()
    steps = escalation_steps(service, incident.severity_enum)
    if not steps:
        raise IncidentError(f"{service.name} has no escalation path in the services file.")
    page = Page(incident_id=incident.id, service=service.name, path={"steps": steps}, step=0,
                paged_by=by, created_at=now,
                next_escalation_at=now + timedelta(minutes=minutes) if len(steps) > 1 else None)
    session.add(page)
    session.flush()
    _record(session, page, steps[0], now)
    return PageStep(page, steps[0], page.next_escalation_at)


def escalate(session: Session, page: Page, minutes: float,
             now: datetime | None = None) -> PageStep | None:
    """Move an unacknowledged page to its next step; None if acknowledged or finished."""
    now = now or utcnow()
    steps: list[list[str]] = page.path.get("steps", [])
    if page.acknowledged_at is not None or page.step + 1 >= len(steps):
        page.next_escalation_at = None
        return None
    if page.next_escalation_at and page.next_escalation_at > now + timedelta(seconds=1):
        return None  # not due yet (a duplicate wake-up)
    page.step += 1
    last = page.step + 1 >= len(steps)
    page.next_escalation_at = None if last else now + timedelta(minutes=minutes)
    _record(session, page, steps[page.step], now)
    return PageStep(page, steps[page.step], page.next_escalation_at)


def acknowledge(session: Session, page_id: int, by: str, now: datetime | None = None) -> Page:
    """First acknowledgement wins; it stops escalation and feeds time to acknowledge."""
    now = now or utcnow()
    page = session.get(Page, page_id, with_for_update=True)
    if page is None:
        raise IncidentError("That page no longer exists.")
    if page.acknowledged_at is None:
        page.acknowledged_at, page.acknowledged_by = now, by
        page.next_escalation_at = None
        incident = session.get(Incident, page.incident_id)
        if incident is not None and incident.acknowledged_at is None:
            incident.acknowledged_at = now
        timeline.record(session, page.incident_id, EventKind.PAGE_ACKNOWLEDGED,
                        f"<@{by}> acknowledged the page for {page.service}", actor_id=by,
                        occurred_at=now, is_key=True, data={"page_id": page.id})
    return page


def pending_pages(session: Session) -> list[Page]:
    return list(session.scalars(select(Page).where(
        Page.acknowledged_at.is_(None), Page.next_escalation_at.is_not(None))))


def _record(session: Session, page: Page, users: list[str], now: datetime) -> None:
    who = ", ".join(f"<@{u}>" for u in users)
    timeline.record(session, page.incident_id, EventKind.PAGED,
                    f"Paged {who} for {page.service} (step {page.step + 1})", occurred_at=now,
                    is_key=True, dedupe_key=f"page:{page.id}:{page.step}",
                    data={"page_id": page.id, "users": users})
