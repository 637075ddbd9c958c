"""Declaring incidents and changing their roles, severity and status.

Every function works inside the caller's transaction (one `Session`) and records what it
did in the timeline. Nothing here talks to Slack.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from incidentbot.core import timeline
from incidentbot.core.errors import IncidentError, InvalidTransition, NotAnIncidentChannel
from incidentbot.core.roles import Role
from incidentbot.core.severity import Severity
from incidentbot.core.status import ACTIVE_STATUSES, Status, allowed_next
from incidentbot.core.timeline import EventKind
from incidentbot.models import Incident, RoleAssignment, utcnow

MAX_TITLE = 200


@dataclass(frozen=True)
class Declaration:
    """What someone asked for when declaring an incident."""

    title: str
    declared_by: str
    severity: Severity = Severity.SEV3
    description: str = ""
    service: str = ""
    is_private: bool = False
    team_id: str = ""
    request_key: str | None = None
    alert_group_key: str | None = None  # set when an alert declared it (no human IC yet)
    is_drill: bool = False

    @property
    def by_person(self) -> bool:
        return self.alert_group_key is None


@dataclass(frozen=True)
class Change:
    """The outcome of a change: the old and new value (equal when nothing changed)."""

    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new


def validate_title(title: str) -> str:
    """A trimmed, non-empty title of at most 200 characters, or an IncidentError saying why."""
    cleaned = " ".join(title.split())
    if not cleaned:
        raise IncidentError("The incident needs a title, e.g. `Checkout returns 500s`.")
    if len(cleaned) > MAX_TITLE:
        raise IncidentError(f"The title is {len(cleaned)} characters; keep it to {MAX_TITLE}.")
    return cleaned


def find_by_request_key(session: Session, request_key: str) -> Incident | None:
    return session.scalar(select(Incident).where(Incident.request_key == request_key))


def record_declaration(
    session: Session,
    declaration: Declaration,
    *,
    channel_id: str,
    channel_name: str,
    now: datetime | None = None,
) -> Incident:
    """Store a new incident whose channel exists, with the declarer as IC."""
    now = now or utcnow()
    incident = Incident(
        title=validate_title(declaration.title),
        description=declaration.description.strip(),
        service=declaration.service.strip(),
        severity=declaration.severity.value,
        status=Status.INVESTIGATING.value,
        is_private=declaration.is_private,
        is_drill=declaration.is_drill,
        team_id=declaration.team_id,
        channel_id=channel_id,
        channel_name=channel_name,
        declared_by=declaration.declared_by,
        declared_at=now,
        acknowledged_at=now if declaration.by_person else None,
        request_key=declaration.request_key,
        alert_group_key=declaration.alert_group_key,
        roles=[],
    )
    session.add(incident)
    session.flush()
    actor = declaration.declared_by
    timeline.record(
        session, incident.id, EventKind.DECLARED,
        f"Incident declared: {incident.title} ({incident.severity})",
        actor_id=actor, occurred_at=now,
        data={"severity": incident.severity, "private": incident.is_private},
    )
    timeline.record(
        session, incident.id, EventKind.CHANNEL_CREATED, f"Channel #{channel_name} created",
        actor_id=actor, occurred_at=now, data={"channel_id": channel_id},
    )
    if declaration.by_person:
        _assign(session, incident, Role.IC, declaration.declared_by, actor, now)
        timeline.record(
            session, incident.id, EventKind.ROLE_ASSIGNED,
            f"<@{actor}> is the {Role.IC.title}", actor_id=actor, occurred_at=now,
            data={"role": Role.IC.value, "user": actor, "previous": None},
        )
    return incident


def find_open_by_alert_group(session: Session, group_key: str) -> Incident | None:
    """The open incident an alert group already declared, if any."""
    return session.scalar(select(Incident).where(
        Incident.alert_group_key == group_key,
        Incident.status.in_([s.value for s in ACTIVE_STATUSES])).order_by(Incident.id.desc()))


def incident_id_for_channel(session: Session, channel_id: str) -> int | None:
    return session.scalar(select(Incident.id).where(Incident.channel_id == channel_id))


def get_by_channel(session: Session, channel_id: str) -> Incident | None:
    return session.scalar(select(Incident).where(Incident.channel_id == channel_id))


def require_incident(session: Session, channel_id: str, *, lock: bool = False) -> Incident:
    """The incident whose channel this is; NotAnIncidentChannel otherwise.

    With `lock`, the row is locked for the rest of the transaction (PostgreSQL), so two
    concurrent changes to one incident apply one after the other.
    """
    incident = _one(session, Incident.channel_id == channel_id, lock)
    if incident is None:
        raise NotAnIncidentChannel("This is not an incident channel.")
    return incident


def get_incident(session: Session, incident_id: int, *, lock: bool = False) -> Incident:
    incident = _one(session, Incident.id == incident_id, lock)
    if incident is None:
        raise IncidentError("That incident no longer exists.")
    return incident


def _one(session: Session, condition: ColumnElement[bool], lock: bool) -> Incident | None:
    query = select(Incident).where(condition)
    return session.scalar(query.with_for_update() if lock else query)


def assign_role(
    session: Session, incident: Incident, role: Role, user_id: str, by: str,
    now: datetime | None = None,
) -> Change:
    """Give `role` to `user_id`, relieving the previous holder; an IC change is a handoff."""
    now = now or utcnow()
    previous = incident.holder(role.value)
    if previous == user_id:
        return Change(previous, user_id)
    _assign(session, incident, role, user_id, by, now)
    if incident.acknowledged_at is None:
        incident.acknowledged_at = now  # an alert-declared incident is picked up by a person
    if role is Role.IC and previous:
        kind = EventKind.IC_HANDOFF
        text = (f"IC handoff: <@{previous}> → <@{user_id}>. "
                f"<@{user_id}> is now the incident commander")
    else:
        kind = EventKind.ROLE_ASSIGNED
        text = f"<@{user_id}> is the {role.title}"
    timeline.record(
        session, incident.id, kind, text, actor_id=by, occurred_at=now,
        data={"role": role.value, "user": user_id, "previous": previous},
    )
    return Change(previous, user_id)


def _assign(
    session: Session, incident: Incident, role: Role, user_id: str, by: str, now: datetime
) -> None:
    for current in incident.roles:
        if current.role == role.value and current.relieved_at is None:
            current.relieved_at = now
    session.flush()  # the partial unique index allows one current holder per role
    assignment = RoleAssignment(
        incident_id=incident.id, role=role.value, user_id=user_id, assigned_by=by, assigned_at=now
    )
    session.add(assignment)
    incident.roles.append(assignment)
    session.flush()


def change_severity(
    session: Session, incident: Incident, severity: Severity, by: str,
    now: datetime | None = None,
) -> Change:
    """Set the severity of an open incident."""
    _require_open(incident, "change its severity")
    old = incident.severity
    if old == severity.value:
        return Change(old, old)
    incident.severity = severity.value
    timeline.record(
        session, incident.id, EventKind.SEVERITY_CHANGED,
        f"Severity changed from {old} to {severity.value}", actor_id=by, occurred_at=now,
        data={"old": old, "new": severity.value},
    )
    return Change(old, severity.value)


def change_status(
    session: Session, incident: Incident, status: Status, by: str,
    now: datetime | None = None,
) -> Change:
    """Move the incident along its lifecycle, stamping when each stage was first reached."""
    now = now or utcnow()
    old = Status(incident.status)
    if old == status:
        return Change(old.value, old.value)
    if status not in allowed_next(old):
        allowed = ", ".join(s.value for s in allowed_next(old)) or "nothing (it is closed)"
        raise InvalidTransition(
            f"The incident is {old.value}; it can move to {allowed}, not {status.value}."
        )
    incident.status = status.value
    stamp = {
        Status.IDENTIFIED: "identified_at",
        Status.MITIGATED: "mitigated_at",
        Status.RESOLVED: "resolved_at",
        Status.CLOSED: "closed_at",
    }.get(status)
    if stamp and getattr(incident, stamp) is None:
        setattr(incident, stamp, now)
    if status.is_open and old is Status.RESOLVED:
        incident.resolved_at = None
    timeline.record(
        session, incident.id, EventKind.STATUS_CHANGED,
        f"Status changed from {old.label} to {status.label}", actor_id=by, occurred_at=now,
        is_key=status in (Status.MITIGATED, Status.RESOLVED),
        data={"old": old.value, "new": status.value},
    )
    return Change(old.value, status.value)


def _require_open(incident: Incident, action: str) -> None:
    if not Status(incident.status).is_open:
        raise InvalidTransition(
            f"The incident is {incident.status}; reopen it before you {action}."
        )


def set_topic(session: Session, incident_id: int, topic: str) -> None:
    """Remember the channel topic as last set in Slack."""
    session.execute(update(Incident).where(Incident.id == incident_id).values(topic=topic[:250]))


def set_card(session: Session, incident: Incident, card_ts: str) -> None:
    """Remember the pinned incident card so later changes update it in place (one UPDATE;
    `incident` may be detached: its `card_ts` is set too)."""
    session.execute(update(Incident).where(Incident.id == incident.id).values(card_ts=card_ts))
    incident.card_ts = card_ts


def open_update_clocks(session: Session) -> list[tuple[int, datetime | None]]:
    """(id, next update due) of every open incident: what the reminder jobs must mirror."""
    query = select(Incident.id, Incident.next_update_due_at).where(
        Incident.status.in_([s.value for s in ACTIVE_STATUSES]))
    return [(incident_id, due) for incident_id, due in session.execute(query)]


def list_open(session: Session) -> list[Incident]:
    """Open incidents, most severe first, then oldest first."""
    query = (
        select(Incident)
        .where(Incident.status.in_([s.value for s in ACTIVE_STATUSES]))
        .order_by(Incident.severity, Incident.declared_at)
    )
    return list(session.scalars(query))
