"""Escalation (seed 004): primary, then secondary, then manager, `ESCALATION_MINUTES` apart,
until someone acknowledges; a SEV1 goes to the manager and the primary at once. When the
whole path goes unanswered, that is said, and the path is paged again from the start
(`PAGE_REPEATS` times) before the bot stops: escalation never ends silently."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from incidentbot.core import timeline
from incidentbot.core.errors import IncidentError
from incidentbot.core.services import Service
from incidentbot.core.severity import Severity
from incidentbot.core.status import Status
from incidentbot.core.timeline import EventKind
from incidentbot.models import Incident, Page, utcnow


@dataclass(frozen=True)
class PageStep:
    """Who to notify now, and when to escalate next (None: paging has stopped).
    `unanswered`: the whole path went unanswered before this step (a repeat, or the end)."""

    page: Page
    notify: list[str]
    escalate_at: datetime | None
    unanswered: bool = False

    @property
    def round(self) -> int:
        """1 for the first walk of the path, 2 for its first repeat, …"""
        return int(self.page.path.get("round", 0)) + 1

    @property
    def paged(self) -> list[tuple[list[str], str]]:
        """Who was paged when (ISO times), in order."""
        return [(list(users), str(at)) for users, at in self.page.path.get("log", [])]


def escalation_steps(service: Service, severity: Severity, now: datetime) -> list[list[str]]:
    """Who to page, step by step: whoever is on call at `now`."""
    path = service.escalation_at(now)
    steps = [[u] for u in (path.primary, path.secondary, path.manager) if u]
    if severity is Severity.SEV1 and path.manager and path.primary:
        steps = [[path.primary, path.manager], *([[path.secondary]] if path.secondary else [])]
    return steps


def start_page(
    session: Session, incident: Incident, service: Service, by: str, minutes: float,
    now: datetime | None = None,
) -> PageStep:
    now = now or utcnow()
    steps = escalation_steps(service, incident.severity_enum, now)
    if not steps:
        raise IncidentError(f"{service.name} has no escalation path in the services file.")
    page = Page(incident_id=incident.id, service=service.name, path={"steps": steps}, step=0,
                paged_by=by, created_at=now, next_escalation_at=now + timedelta(minutes=minutes))
    session.add(page)
    session.flush()
    _record(session, page, steps[0], now)
    return PageStep(page, steps[0], page.next_escalation_at)


def escalate(session: Session, page: Page, minutes: float, repeats: int,
             now: datetime | None = None) -> PageStep | None:
    """Move an unacknowledged page on: to its next step, or, after the last step went
    unanswered, back to the first (`repeats` times) or to a stop. None: nothing to do (it
    was acknowledged, its incident closed, or it is not due yet)."""
    now = now or utcnow()
    steps: list[list[str]] = page.path.get("steps", [])
    incident = session.get(Incident, page.incident_id)
    if page.acknowledged_at is not None or incident is None \
            or not Status(incident.status).is_open:
        page.next_escalation_at = None
        return None
    if page.next_escalation_at is None or \
            page.next_escalation_at > now + timedelta(seconds=1):
        return None  # stopped, or not due yet (a duplicate wake-up)
    if page.step + 1 < len(steps):
        page.step += 1
        page.next_escalation_at = now + timedelta(minutes=minutes)
        _record(session, page, steps[page.step], now)
        return PageStep(page, steps[page.step], page.next_escalation_at)
    walked = int(page.path.get("round", 0))
    step = PageStep(page, [], None, unanswered=True)
    timeline.record(session, page.incident_id, EventKind.PAGE_UNANSWERED,
                    f"Nobody acknowledged the page for {page.service} (round {walked + 1})",
                    occurred_at=now, is_key=True, dedupe_key=f"page:{page.id}:gone:{walked}",
                    data={"page_id": page.id, "paged": step.paged})
    if walked >= repeats:
        page.next_escalation_at = None
        return step
    page.path = {**page.path, "round": walked + 1}
    page.step = 0
    page.next_escalation_at = now + timedelta(minutes=minutes)
    _record(session, page, steps[0], now)
    return PageStep(page, steps[0], page.next_escalation_at, unanswered=True)


def acknowledge(session: Session, page_id: int, by: str, now: datetime | None = None) -> Page:
    """First acknowledgement wins; it stops escalation. The incident's first page answered
    sets its time to acknowledge (a declarer who was IC at once counts only when nobody was
    paged)."""
    now = now or utcnow()
    page = session.get(Page, page_id, with_for_update=True)
    if page is None:
        raise IncidentError("That page no longer exists.")
    if page.acknowledged_at is None:
        page.acknowledged_at, page.acknowledged_by = now, by
        page.next_escalation_at = None
        incident = session.get(Incident, page.incident_id)
        if incident is not None and not _acknowledged_before(session, page):
            incident.acknowledged_at = now  # the first page answered: time to acknowledge
        timeline.record(session, page.incident_id, EventKind.PAGE_ACKNOWLEDGED,
                        f"<@{by}> acknowledged the page for {page.service}", actor_id=by,
                        occurred_at=now, is_key=True, data={"page_id": page.id})
    return page


def _acknowledged_before(session: Session, page: Page) -> bool:
    """Whether another page of the incident was acknowledged already."""
    return session.scalar(select(Page.id).where(
        Page.incident_id == page.incident_id, Page.id != page.id,
        Page.acknowledged_at.is_not(None)).limit(1)) is not None


def pending_pages(session: Session) -> list[Page]:
    return list(session.scalars(select(Page).where(
        Page.acknowledged_at.is_(None), Page.next_escalation_at.is_not(None))))


def _record(session: Session, page: Page, users: list[str], now: datetime) -> None:
    who = ", ".join(f"<@{u}>" for u in users)
    walked = int(page.path.get("round", 0))
    page.path = {**page.path, "log": [*page.path.get("log", []), [users, now.isoformat()]]}
    timeline.record(session, page.incident_id, EventKind.PAGED,
                    f"Paged {who} for {page.service} (step {page.step + 1})", occurred_at=now,
                    is_key=True, dedupe_key=f"page:{page.id}:{page.step}:{walked}",
                    data={"page_id": page.id, "users": users})
