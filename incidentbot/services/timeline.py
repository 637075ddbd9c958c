"""The timeline of an incident channel: messages, edits, deletions and key events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from incidentbot.core import lifecycle, timeline
from incidentbot.db import transaction
from incidentbot.models import Incident, TimelineEvent
from incidentbot.services.context import Context, UserFacingError
from incidentbot.slack import blocks

log = logging.getLogger(__name__)

# Message subtypes that are people talking; joins, topic changes and bot posts are not.
HUMAN_SUBTYPES = {None, "thread_broadcast", "file_share", "me_message"}
KEY_REACTION = "pushpin"

ChangeToMessage = Callable[[Session, Incident], bool]


def ts_time(ts: str) -> datetime:
    """Slack's `ts` ("1700000000.000100") as a UTC datetime."""
    return datetime.fromtimestamp(float(ts), UTC)


class TimelineService:
    def __init__(self, ctx: Context, bot_user_id: str = "") -> None:
        self.ctx = ctx
        self.bot_user_id = bot_user_id
        self._channel_incidents: dict[str, int] = {}

    def capture(self, event: dict[str, Any]) -> bool:
        """Store a channel message, or apply an edit, a deletion or a key-event reaction, in
        its incident's timeline; False if not relevant (another channel, a bot's post)."""
        kind, subtype = event.get("type"), event.get("subtype")
        if kind == "message" and subtype in ("message_changed", "message_deleted"):
            return self._capture_change(event)
        if kind == "message":
            return self._store_message(event)
        if kind in ("reaction_added", "reaction_removed"):
            return self._capture_reaction(event, is_key=kind == "reaction_added")
        return False

    def _store_message(self, event: dict[str, Any]) -> bool:
        """One insert, ignored when the message (its incident and ts) is stored already."""
        if event.get("subtype") not in HUMAN_SUBTYPES or self._from_bot(event) \
                or not event.get("ts"):
            return False
        incident_id = self._incident_id(event.get("channel", ""))
        if incident_id is None:
            return False
        ts = event["ts"]
        with transaction(self.ctx.sessions) as session:
            return timeline.store_message(
                session, incident_id, user_id=event.get("user", ""), text=event.get("text", ""),
                ts=ts, thread_ts=event.get("thread_ts"), occurred_at=ts_time(ts))

    def _incident_id(self, channel_id: str) -> int | None:
        """The incident of a channel (a channel never changes incident, so hits are cached)."""
        found = self._channel_incidents.get(channel_id)
        if found is None and channel_id:
            with self.ctx.sessions() as session:  # errors propagate: Slack redelivers
                found = lifecycle.incident_id_for_channel(session, channel_id)
            if found is not None:
                self._channel_incidents[channel_id] = found
        return found

    def _capture_change(self, event: dict[str, Any]) -> bool:
        channel = event.get("channel", "")
        if event.get("subtype") == "message_changed":
            return bool(self._in_incident(
                channel, lambda session, incident: self._apply_edit(session, incident, event)))
        ts = event.get("deleted_ts") or (event.get("previous_message") or {}).get("ts")
        return bool(ts) and bool(self._in_incident(channel, lambda session, incident: (
            timeline.apply_delete(session, incident.id, ts=ts,
                                  deleted_at=ts_time(event.get("ts") or ts)))))

    def _in_incident(self, channel_id: str, apply: ChangeToMessage) -> bool | None:
        """`apply` to the incident of a channel, in one transaction (None: no incident)."""
        with transaction(self.ctx.sessions) as session:
            incident = lifecycle.get_by_channel(session, channel_id)
            return None if incident is None else apply(session, incident)

    def _apply_edit(self, session: Any, incident: Incident, event: dict[str, Any]) -> bool:
        message = event.get("message") or {}
        if not message.get("ts") or self._from_bot(message):
            return False
        edited = (message.get("edited") or {}).get("ts") or event.get("ts")
        timeline.apply_edit(
            session,
            incident.id,
            user_id=message.get("user", ""),
            ts=message["ts"],
            text=message.get("text", ""),
            thread_ts=message.get("thread_ts"),
            occurred_at=ts_time(message["ts"]),
            edited_at=ts_time(edited or message["ts"]),
        )
        return True

    def _capture_reaction(self, event: dict[str, Any], *, is_key: bool) -> bool:
        item = event.get("item") or {}
        if event.get("reaction") != KEY_REACTION or item.get("type") != "message":
            return False
        ts = item.get("ts", "")
        return bool(self._in_incident(item.get("channel", ""), lambda session, incident: (
            timeline.mark_key(session, incident.id, ts, is_key=is_key))))

    def _from_bot(self, message: dict[str, Any]) -> bool:
        return (
            bool(message.get("bot_id"))
            or message.get("subtype") == "bot_message"
            or (bool(self.bot_user_id) and message.get("user") == self.bot_user_id)
        )

    def add_note(self, incident_id: int, text: str, by: str, request_key: str) -> None:
        """A key event; `request_key` makes a note run twice (its job restarted) one entry."""
        text = text.strip()
        if not text:
            raise UserFacingError("Write the note after the command: `/incident note <text>`.")
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id)
            added = timeline.record(
                session, incident.id, timeline.EventKind.NOTE, text, actor_id=by,
                occurred_at=self.ctx.clock(), is_key=True, dedupe_key=request_key[:120])
        if added is not None:
            self.ctx.try_slack(lambda: self.ctx.say(incident, blocks.note_text(by, text)))

    def key_events(self, incident_id: int) -> tuple[Incident, list[TimelineEvent]]:
        with self.ctx.reading() as session:
            incident = lifecycle.get_incident(session, incident_id)
            return incident, timeline.key_events(session, incident_id)

