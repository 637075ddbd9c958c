"""Recording the incident timeline; idempotent where Slack may deliver the same thing twice."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from incidentbot.db import insert_ignore
from incidentbot.models import TimelineEvent, utcnow


class EventKind(StrEnum):
    """What a timeline entry records."""

    DECLARED = "declared"
    CHANNEL_CREATED = "channel_created"
    MEMBER_INVITED = "member_invited"
    TOPIC_SET = "topic_set"
    CARD_POSTED = "card_posted"
    CARD_PINNED = "card_pinned"
    ROLE_ASSIGNED = "role_assigned"
    IC_HANDOFF = "ic_handoff"
    SEVERITY_CHANGED = "severity_changed"
    STATUS_CHANGED = "status_changed"
    MESSAGE = "message"
    NOTE = "note"
    UPDATE_POSTED = "update_posted"
    REMINDER = "reminder"
    ESCALATION = "escalation"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    ACTION_ADDED = "action_added"
    ACTION_DONE = "action_done"
    POSTMORTEM = "postmortem"
    ALERT = "alert"
    RUNBOOK_LINKED = "runbook_linked"
    ARCHIVED = "archived"
    NUDGED = "nudged"
    PAGED = "paged"
    PAGE_ACKNOWLEDGED = "page_acknowledged"
    PAGE_UNANSWERED = "page_unanswered"
    SLACK_ERROR = "slack_error"


def record(
    session: Session,
    incident_id: int,
    kind: EventKind,
    text: str = "",
    *,
    actor_id: str | None = None,
    occurred_at: datetime | None = None,
    dedupe_key: str | None = None,
    slack_ts: str | None = None,
    thread_ts: str | None = None,
    is_key: bool = False,
    data: dict[str, Any] | None = None,
) -> TimelineEvent | None:
    """Add one timeline entry; returns None when `dedupe_key` was already recorded."""
    return add_once(session, TimelineEvent(**event_row(
        incident_id, kind, text, occurred_at=occurred_at or utcnow(), actor_id=actor_id,
        dedupe_key=dedupe_key, slack_ts=slack_ts, thread_ts=thread_ts, is_key=is_key,
        data=data)))


def add_once(session: Session, event: TimelineEvent) -> TimelineEvent | None:
    """Flush `event`; None when its `dedupe_key` is already stored for its incident."""
    if event.dedupe_key is None:
        session.add(event)
        session.flush()
        return event
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        return None
    return event


def events_for(session: Session, incident_id: int) -> list[TimelineEvent]:
    """The incident's timeline in the order things happened."""
    return list(session.scalars(_in_order(select(TimelineEvent), incident_id)))


ENTRY_COLUMNS = (TimelineEvent.kind, TimelineEvent.text, TimelineEvent.actor_id,
                 TimelineEvent.occurred_at, TimelineEvent.thread_ts, TimelineEvent.is_key,
                 TimelineEvent.edited_at, TimelineEvent.deleted_at)


def entries_for(session: Session, incident_id: int) -> list[Row[Any]]:
    """`events_for` as rows of `ENTRY_COLUMNS` (attributes named like the event's): a
    postmortem reads tens of thousands, and an ORM object and its `data` cost several times
    as much as the row."""
    return list(session.execute(_in_order(select(*ENTRY_COLUMNS), incident_id)))


def _in_order(query: Select[Any], incident_id: int) -> Select[Any]:
    return query.where(TimelineEvent.incident_id == incident_id).order_by(
        TimelineEvent.occurred_at, TimelineEvent.id)


def recorded(session: Session, incident_id: int, kind: EventKind) -> bool:
    """Whether the incident's timeline has an event of this kind."""
    return session.scalar(select(TimelineEvent.id).where(
        TimelineEvent.incident_id == incident_id, TimelineEvent.kind == kind.value).limit(1)) \
        is not None


def message_key(ts: str) -> str:
    return f"msg:{ts}"


def find_message(session: Session, incident_id: int, ts: str) -> TimelineEvent | None:
    return session.scalar(select(TimelineEvent).where(
        TimelineEvent.incident_id == incident_id,
        TimelineEvent.dedupe_key == message_key(ts),
    ))


def record_message(
    session: Session, incident_id: int, *, user_id: str, text: str, ts: str,
    thread_ts: str | None, occurred_at: datetime,
) -> TimelineEvent | None:
    """Store a channel message once, however often Slack delivers it."""
    return add_once(session, TimelineEvent(**message_row(
        incident_id, user_id=user_id, text=text, ts=ts, thread_ts=thread_ts,
        occurred_at=occurred_at)))


EVENT_KEY = ("incident_id", "dedupe_key")  # what a timeline row is unique on


def event_row(
    incident_id: int, kind: EventKind, text: str = "", *, occurred_at: datetime,
    actor_id: str | None = None, dedupe_key: str | None = None, slack_ts: str | None = None,
    thread_ts: str | None = None, is_key: bool = False, data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A timeline row (unique on EVENT_KEY), as `record` and `store_message` add it."""
    return {
        "incident_id": incident_id, "kind": kind.value, "text": text, "actor_id": actor_id,
        "occurred_at": occurred_at, "dedupe_key": dedupe_key, "slack_ts": slack_ts,
        "thread_ts": thread_ts, "is_key": is_key, "data": data or {},
    }


def message_row(
    incident_id: int, *, user_id: str, text: str, ts: str, thread_ts: str | None,
    occurred_at: datetime,
) -> dict[str, Any]:
    """A channel message's timeline row, unique on the incident and the message's ts."""
    return event_row(incident_id, EventKind.MESSAGE, text, occurred_at=occurred_at,
                     actor_id=user_id, dedupe_key=message_key(ts), slack_ts=ts,
                     thread_ts=thread_ts if thread_ts != ts else None)


def store_message(
    session: Session, incident_id: int, *, user_id: str, text: str, ts: str,
    thread_ts: str | None, occurred_at: datetime,
) -> bool:
    """Store a channel message in one statement; False when it was stored already (Slack
    delivered it again), whoever else inserts it at the same moment."""
    row = message_row(incident_id, user_id=user_id, text=text, ts=ts, thread_ts=thread_ts,
                      occurred_at=occurred_at)
    return insert_ignore(session, TimelineEvent.__table__, row, EVENT_KEY)


def apply_edit(
    session: Session, incident_id: int, *, user_id: str, ts: str, text: str,
    thread_ts: str | None, occurred_at: datetime, edited_at: datetime,
) -> TimelineEvent | None:
    """Keep the final text of an edited message (storing it if the original was missed)."""
    event = find_message(session, incident_id, ts)
    if event is None:
        event = record_message(session, incident_id, user_id=user_id, text=text, ts=ts,
                               thread_ts=thread_ts, occurred_at=occurred_at)
        if event is None:  # stored concurrently by the original delivery
            event = find_message(session, incident_id, ts)
    if event is not None and event.deleted_at is None:
        event.text = text
        event.edited_at = edited_at
    return event


def apply_delete(session: Session, incident_id: int, *, ts: str, deleted_at: datetime) -> bool:
    """Mark a message deleted (kept for the audit trail, left out of the postmortem)."""
    event = find_message(session, incident_id, ts)
    if event is None:
        return False
    if event.deleted_at is None:
        event.deleted_at = deleted_at
    return True


def mark_key(session: Session, incident_id: int, ts: str, *, is_key: bool) -> bool:
    """Mark (or unmark) a message as a key event; False if the message is not recorded."""
    event = find_message(session, incident_id, ts)
    if event is None:
        return False
    event.is_key = is_key
    return True


def key_events(session: Session, incident_id: int) -> list[TimelineEvent]:
    """Key events that were not deleted, in time order."""
    query = (
        select(TimelineEvent)
        .where(TimelineEvent.incident_id == incident_id, TimelineEvent.is_key.is_(True),
               TimelineEvent.deleted_at.is_(None))
        .order_by(TimelineEvent.occurred_at, TimelineEvent.id)
    )
    return list(session.scalars(query))
