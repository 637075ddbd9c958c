"""The blameless postmortem draft, rendered from the stored incident with a Jinja2 template.

Template variables: `incident`, `status`, `declared_at`, `resolved_at`, `generated_at`,
`roles` (title, people), `summary`, `impact_who`, `impact_what`, `timeline` (minute, text),
`went_well`, `to_improve`, `actions`, `metrics` (acknowledge, mitigate, resolve),
`update_count`, `reminder_count`, `postmortem_due`; helpers `name(user_id)` and the `cell`
filter (safe inside a Markdown table).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from incidentbot.core import actions, timeline
from incidentbot.core.metrics import durations, format_duration
from incidentbot.core.roles import ROLE_TITLES, Role
from incidentbot.core.severity import MTTR_TARGET, Severity
from incidentbot.core.status import Status
from incidentbot.core.timeline import EventKind
from incidentbot.models import ActionItem, Incident, RoleAssignment, utcnow

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "postmortem.md.j2"
MINUTE = "%Y-%m-%d %H:%M"
MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
MESSAGE = EventKind.MESSAGE.value
# Bot bookkeeping that would only clutter the story.
QUIET_KINDS = {EventKind.TOPIC_SET.value, EventKind.CARD_POSTED.value,
               EventKind.CARD_PINNED.value, EventKind.MEMBER_INVITED.value}


class TimelineEntry(Protocol):
    """What the draft reads of a timeline event: a `TimelineEvent`, or a row of
    `timeline.ENTRY_COLUMNS`."""

    @property
    def kind(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def actor_id(self) -> str | None: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def thread_ts(self) -> str | None: ...
    @property
    def is_key(self) -> bool: ...
    @property
    def edited_at(self) -> datetime | None: ...
    @property
    def deleted_at(self) -> datetime | None: ...


class TimelineLine(NamedTuple):
    """One line of the draft's timeline (the template reads `minute` and `text`)."""

    minute: str
    text: str


@dataclass(frozen=True)
class PostmortemInput:
    """Everything the draft is made from, loaded in one transaction."""

    incident: Incident
    events: Sequence[TimelineEntry]
    action_items: Sequence[ActionItem]
    role_history: Sequence[RoleAssignment]


def load(session: Session, incident_id: int) -> PostmortemInput:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise LookupError(f"incident {incident_id} not found")
    history = list(session.scalars(select(RoleAssignment).where(
        RoleAssignment.incident_id == incident_id).order_by(RoleAssignment.assigned_at,
                                                            RoleAssignment.id)))
    return PostmortemInput(incident, timeline.entries_for(session, incident_id),
                           actions.actions_for(session, incident_id), history)


def render(
    data: PostmortemInput, *, names: Mapping[str, str] | None = None,
    template_path: Path | None = None, now: datetime | None = None,
) -> str:
    """The Markdown draft. `names` maps user IDs to display names (IDs shown otherwise)."""
    names = dict(names or {})
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str((template_path or DEFAULT_TEMPLATE).parent)),
        autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
    )
    environment.filters["cell"] = table_cell
    template = environment.get_template((template_path or DEFAULT_TEMPLATE).name)
    return template.render(**context(data, names, now or utcnow()))


def context(data: PostmortemInput, names: Mapping[str, str], now: datetime) -> dict[str, Any]:
    incident = data.incident

    def name(user_id: str | None) -> str:
        return "n/a" if not user_id else "@" + names.get(user_id, user_id)

    def humanize(text: str) -> str:
        return MENTION.sub(lambda m: name(m.group(1)), text) if "<@" in text else text

    took = durations(incident)
    metrics = {"acknowledge": format_duration(took.acknowledge),
               "mitigate": format_duration(took.mitigate),
               "resolve": format_duration(took.resolve)}
    kinds = [e.kind for e in data.events]
    return {
        "incident": incident,
        "status": Status(incident.status).label,
        "declared_at": f"{incident.declared_at:{MINUTE}}",
        "resolved_at": f"{incident.resolved_at:{MINUTE}}" if incident.resolved_at else None,
        "generated_at": f"{now:{MINUTE}}",
        "postmortem_due": (f"{incident.postmortem_due_at:{MINUTE}} UTC"
                           if incident.postmortem_due_at else None),
        "roles": role_lines(data.role_history, name),
        "summary": summary(incident, took.resolve),
        "impact_who": one_line(incident.customer_impact) or latest_impact(data.events)
        or "_to be filled in_",
        "impact_what": one_line(incident.description) or incident.title,
        "timeline": [TimelineLine(f"{e.occurred_at:{MINUTE}}", describe(e, name, humanize))
                     for e in data.events if shown(e)],
        "went_well": went_well(incident, data.events, took),
        "to_improve": to_improve(incident, data.events, took),
        "actions": data.action_items,
        "metrics": metrics,
        "update_count": kinds.count(EventKind.UPDATE_POSTED.value),
        "reminder_count": kinds.count(EventKind.REMINDER.value),
        "name": name,
    }


def shown(event: TimelineEntry) -> bool:
    """Deleted messages and bot bookkeeping stay out of the postmortem."""
    return event.deleted_at is None and event.kind not in QUIET_KINDS


def describe(event: TimelineEntry, name: Any, humanize: Any) -> str:
    text = one_line(humanize(event.text))
    if event.kind == MESSAGE:
        edited = " _(edited)_" if event.edited_at else ""
        reply = "↳ " if event.thread_ts else ""
        key = "**[key]** " if event.is_key else ""
        return f"{key}{reply}{name(event.actor_id)}: {text}{edited}"
    key = "**" if event.is_key else ""
    by = f" ({name(event.actor_id)})" if event.actor_id else ""
    return f"{key}{text}{key}{by}"


def role_lines(history: Sequence[RoleAssignment], name: Any) -> list[dict[str, Any]]:
    people: dict[str, list[str]] = {}
    for assignment in history:
        people.setdefault(assignment.role, []).append(name(assignment.user_id))
    return [{"title": ROLE_TITLES[Role(role)], "people": who}
            for role, who in sorted(people.items(), key=lambda kv: list(Role).index(Role(kv[0])))]


def summary(incident: Incident, resolve_time: Any) -> str:
    """At most five sentences, from the title, description, resolution and cause."""
    sentences = [f"On {incident.declared_at:%Y-%m-%d} at {incident.declared_at:%H:%M} UTC a "
                 f"{incident.severity} incident was declared: {incident.title.rstrip('.')}."]
    for text in (incident.description, incident.resolution_summary):
        if first := first_sentence(text):
            sentences.append(first)
    if incident.resolved_at:
        sentences.append(f"It was resolved after {format_duration(resolve_time)}.")
    if cause := first_sentence(incident.root_cause):
        sentences.append(f"Root cause: {cause[0].lower() + cause[1:]}")
    return " ".join(sentences[:5])


def first_sentence(text: str) -> str:
    text = one_line(text)
    if not text:
        return ""
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence if sentence[-1] in ".!?" else sentence + "."


def one_line(text: str) -> str:
    return " ".join((text or "").split())


def table_cell(text: str) -> str:
    return one_line(text).replace("|", "\\|")


def latest_impact(events: Sequence[TimelineEntry]) -> str:
    for event in reversed(events):
        if event.kind == EventKind.UPDATE_POSTED.value and "Impact:" in event.text:
            return one_line(event.text.split("Impact:", 1)[1].split("·", 1)[0])
    return ""


def went_well(incident: Incident, events: Sequence[TimelineEntry], took: Any) -> list[str]:
    lines: list[str] = []
    kinds = [e.kind for e in events]
    first_update = next((e for e in events if e.kind == EventKind.UPDATE_POSTED.value), None)
    if first_update:
        lines.append("First status update posted "
                     f"{format_duration(first_update.occurred_at - incident.declared_at)} after "
                     "declaration.")
    if kinds.count(EventKind.IC_HANDOFF.value):
        lines.append(f"Command was handed off explicitly {kinds.count('ic_handoff')} time(s).")
    target = MTTR_TARGET[Severity(incident.severity)]
    if took.resolve is not None and took.resolve <= target:
        lines.append(f"Resolved in {format_duration(took.resolve)}, within the "
                     f"{incident.severity} target of {format_duration(target)}.")
    key_events = sum(1 for e in events if e.is_key and e.deleted_at is None)
    if key_events:
        lines.append(f"{key_events} key event(s) were marked during the response.")
    return [*lines, "_Add what helped: alerts, runbooks, people, tools._"]


def to_improve(incident: Incident, events: Sequence[TimelineEntry], took: Any) -> list[str]:
    lines: list[str] = []
    kinds = [e.kind for e in events]
    reminders = kinds.count(EventKind.REMINDER.value)
    if reminders:
        lines.append(f"Status updates were late {reminders} time(s) against the "
                     f"{incident.severity} update interval.")
    if kinds.count(EventKind.ESCALATION.value):
        lines.append("The incident was escalated for lack of progress updates.")
    if EventKind.UPDATE_POSTED.value not in kinds:
        lines.append("No status update was posted during the incident.")
    target = MTTR_TARGET[Severity(incident.severity)]
    if took.resolve is not None and took.resolve > target:
        lines.append(f"Resolution took {format_duration(took.resolve)}, beyond the "
                     f"{incident.severity} target of {format_duration(target)}.")
    return [*lines, "_Add what slowed the response: detection, access, missing runbooks._"]
