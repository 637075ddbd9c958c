"""Running an open incident: timeline capture, notes, status updates and reminders."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from incidentbot.core import lifecycle, timeline, updates
from incidentbot.core.roles import Role
from incidentbot.core.status import Status
from incidentbot.core.updates import UpdateRequest
from incidentbot.db import insert_ignore, transaction
from incidentbot.models import Incident, StatusUpdate, TimelineEvent
from incidentbot.slack import blocks, reminder_metadata
from incidentbot.slack.gateway import SlackCallFailed
from incidentbot.slack.workflows import IncidentWorkflows, UserFacingError, describe_slack_error

log = logging.getLogger(__name__)

CONFIRM_PAUSES_S = (0.2, 1.0)  # between tries to record a posted reminder

# Message subtypes that are people talking; joins, topic changes and bot posts are not.
HUMAN_SUBTYPES = {None, "thread_broadcast", "file_share", "me_message"}
KEY_REACTION = "pushpin"


ChangeToMessage = Callable[[Session, Incident], bool]


def ts_time(ts: str) -> datetime:
    """Slack's `ts` ("1700000000.000100") as a UTC datetime."""
    return datetime.fromtimestamp(float(ts), UTC)


class ResponseWorkflows:
    """What happens in an incident channel while the incident is open."""

    def __init__(self, flows: IncidentWorkflows, bot_user_id: str = "") -> None:
        self.flows = flows
        self.gateway = flows.gateway
        self.settings = flows.settings
        self.bot_user_id = bot_user_id
        self._channel_incidents: dict[str, int] = {}

    # -- timeline capture (raises on database failure so Slack redelivers) --------------

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
        row = timeline.message_row(
            incident_id, user_id=event.get("user", ""), text=event.get("text", ""), ts=ts,
            thread_ts=event.get("thread_ts"), occurred_at=ts_time(ts))
        with transaction(self.flows.sessions) as session:
            return insert_ignore(session, TimelineEvent.__table__, row, timeline.EVENT_KEY)

    def _incident_id(self, channel_id: str) -> int | None:
        """The incident of a channel (a channel never changes incident, so hits are cached)."""
        found = self._channel_incidents.get(channel_id)
        if found is None and channel_id:
            with self.flows.sessions() as session:  # errors propagate: Slack redelivers
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
        with transaction(self.flows.sessions) as session:
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

    # -- notes and the key-event summary -------------------------------------------------

    def add_note(self, incident_id: int, text: str, by: str) -> None:
        text = text.strip()
        if not text:
            raise UserFacingError("Write the note after the command: `/incident note <text>`.")
        with self.flows._writing() as session:
            incident = lifecycle.get_incident(session, incident_id)
            timeline.record(
                session,
                incident.id,
                timeline.EventKind.NOTE,
                text,
                actor_id=by,
                occurred_at=self.flows.clock(),
                is_key=True,
            )
        self.flows._try(lambda: self.flows.say(incident, blocks.note_text(by, text)))

    def key_events(self, incident_id: int) -> tuple[Incident, list[TimelineEvent]]:
        with self.flows._unit() as session:
            incident = lifecycle.get_incident(session, incident_id)
            return incident, timeline.key_events(session, incident_id)

    # -- status updates ---------------------------------------------------------------

    def latest_update(self, incident_id: int) -> StatusUpdate | None:
        with self.flows._unit() as session:
            return updates.latest_update(session, incident_id)

    def post_update(self, incident_id: int, request: UpdateRequest) -> StatusUpdate:
        """Record the update, post it in the channel and the broadcast channel, replan."""
        with self.flows._writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            already = updates.find_update(session, request.request_key)
            update = updates.post_update(
                session,
                incident,
                request,
                now=self.flows.clock(),
                interval_minutes=self.flows.interval(incident.severity),
            )
        if already:
            return update
        text = blocks.status_update_text(incident, update)
        failure: SlackCallFailed | None = None
        try:
            ts = self.flows.say(incident, text)
        except SlackCallFailed as exc:
            failure = exc
        else:
            with transaction(self.flows.sessions) as session:
                updates.set_update_message(session, update.id, ts)
        self._broadcast_update(incident, update)
        self.flows.plan_reminder(incident)
        self.flows.refresh(incident.id)
        if failure is not None:
            raise UserFacingError(
                ":warning: Your update was saved and the reminder clock reset, but I could not "
                f"post it in the channel: {describe_slack_error(failure)}. Please paste it "
                "there yourself."
            )
        return update

    def _broadcast_update(self, incident: Incident, update: StatusUpdate) -> None:
        self.flows.broadcast(
            incident,
            blocks.status_update_text(incident, update, link_channel=True),
            "posted a status update",
        )

    # -- reminders ----------------------------------------------------------------------

    def snooze(self, incident_id: int, by: str) -> datetime | None:
        with self.flows._writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            if not Status(incident.status).is_open:
                raise UserFacingError("The incident is no longer open; nothing to snooze.")
            interval = self.flows.interval(incident.severity)
            due = updates.snooze(session, incident, by, interval, self.flows.clock())
        self.flows.plan_reminder(incident)
        self.flows.refresh(incident.id)
        return due

    def fire_reminder(self, incident_id: int) -> None:
        """Scheduler callback: post the due reminder once, escalate if silent too long."""
        try:
            with transaction(self.flows.sessions) as session:
                incident = lifecycle.get_incident(session, incident_id, lock=True)
                outcome = updates.claim_reminder(
                    session,
                    incident,
                    interval_minutes=self.flows.interval(incident.severity),
                    now=self.flows.clock(),
                )
        except Exception:
            log.exception("Reminder for incident %s could not be claimed", incident_id)
            return
        self.flows.plan_reminder(incident)
        if not outcome.post:
            return
        try:
            ts = self._say_reminder(incident, outcome.claim_key, outcome.minutes_without_update)
        except SlackCallFailed:
            self._retry_reminder_later(incident_id, outcome)
            return
        self._confirm_reminder(incident_id, outcome.claim_key, ts)
        if outcome.escalate:
            ic = incident.current_roles().get(Role.IC.value)
            self._escalate(incident, ic, outcome.minutes_without_update)
        self.flows.refresh(incident.id)

    def _say_reminder(self, incident: Incident, claim_key: str | None, minutes: int) -> str:
        """Post the reminder naming the IC and Comms Lead, its claim in the message's
        metadata (see `reminder_metadata`); the message's ts. Raises `SlackCallFailed`."""
        roles = incident.current_roles()
        ic, comms = roles.get(Role.IC.value), roles.get(Role.COMMS.value)
        metadata = None if claim_key is None else \
            reminder_metadata.reminder_metadata(claim_key, incident.id)
        return self.flows.say(incident, blocks.reminder_text(ic, comms, minutes),
                              blocks.reminder_blocks(incident, ic, comms, minutes),
                              metadata=metadata)

    def _confirm_reminder(self, incident_id: int, claim_key: str | None, ts: str) -> None:
        """Record that the claimed reminder was posted, trying a few times: a claim left
        unconfirmed is looked for in the channel, and posted if not found, at the next
        takeover (`recover_reminders`)."""
        if claim_key is None:
            return
        for pause in (*CONFIRM_PAUSES_S, None):
            try:
                with transaction(self.flows.sessions) as session:
                    updates.mark_reminder_posted(session, incident_id, claim_key, ts)
                return
            except Exception:
                if pause is None:
                    log.exception("Could not confirm the reminder of incident %s", incident_id)
                    return
                log.warning("Confirming the reminder of incident %s failed; trying again",
                            incident_id, exc_info=True)
                time.sleep(pause)

    def recover_reminders(self) -> int:
        """On becoming the scheduler leader (at start on SQLite): settle the reminders that
        were claimed but never confirmed, so a crash neither skips nor doubles a reminder.
        How many there were."""
        with transaction(self.flows.sessions) as session:
            pending = [(e.incident_id, e.dedupe_key, e.occurred_at)
                       for e in updates.unposted_reminders(session)]
        for incident_id, claim_key, claimed_at in pending:
            if claim_key is not None:
                self._recover_reminder(incident_id, claim_key, claimed_at)
        return len(pending)

    def _recover_reminder(self, incident_id: int, claim_key: str, claimed_at: datetime) -> None:
        """Confirm an unconfirmed claim with the message Slack stored for it before its
        poster died; post the reminder if there is none (the crash came before the post).
        A claim that still cannot be confirmed is tried again at the next takeover."""
        incident = self.flows.incident_by_id(incident_id)
        if not Status(incident.status).is_open:
            return
        ts = self._posted_reminder(incident, claim_key, claimed_at)
        if ts is None:
            minutes = int(
                (self.flows.clock() - updates.last_activity(incident)).total_seconds() // 60
            )
            posted = self.flows._try(lambda: self._say_reminder(incident, claim_key, minutes))
            ts = posted if isinstance(posted, str) else None
        if ts is not None:
            self._confirm_reminder(incident_id, claim_key, ts)

    def _posted_reminder(self, incident: Incident, claim_key: str,
                         claimed_at: datetime) -> str | None:
        """The ts of the channel message that is the reminder of this claim, found by its
        metadata in the channel's history around the claim's time; None if there is none.

        If the history cannot be read, also None, so the reminder is posted (again, if
        Slack did store it): a reminder missed is worse than a reminder twice.
        """
        oldest, latest = reminder_metadata.search_window(claimed_at)
        try:
            return reminder_metadata.find_claimed(
                self.gateway.history(incident.channel_id, oldest=oldest, latest=latest),
                claim_key, incident.id)
        except SlackCallFailed as exc:
            log.warning("Could not read the channel of incident %s (%s) to see whether its "
                        "reminder %s was posted; posting it, perhaps a second time",
                        incident.id, exc.error, claim_key)
            return None

    def nudge_stale(self, _target: int = 0) -> int:
        """Scheduler sweep: ask quiet open incidents whether they are still active."""
        after = timedelta(days=self.settings.stale_after_days)
        with transaction(self.flows.sessions) as session:
            stale = updates.stale_incidents(session, self.flows.clock(), after)
            for incident in stale:
                timeline.record(session, incident.id, timeline.EventKind.NUDGED,
                                "Asked whether the incident is still active",
                                occurred_at=self.flows.clock())
        for incident in stale:
            self.flows._try(lambda i=incident: self.flows.say(i, blocks.nudge_text(i)))
        return len(stale)

    def _retry_reminder_later(self, incident_id: int, outcome: updates.ReminderOutcome) -> None:
        """The reminder could not be posted: give up the claim and try again shortly."""
        try:
            with transaction(self.flows.sessions) as session:
                incident = lifecycle.get_incident(session, incident_id, lock=True)
                updates.release_reminder(
                    session,
                    incident,
                    outcome,
                    self.flows.clock(),
                    retry_after=timedelta(seconds=self.settings.reminder_retry_seconds),
                )
        except Exception:
            log.exception("Could not re-plan the reminder of incident %s", incident_id)
            return
        log.warning(
            "Reminder for incident %s not posted; retrying at %s",
            incident_id,
            incident.next_update_due_at,
        )
        self.flows.plan_reminder(incident)

    def _escalate(self, incident: Incident, ic: str | None, minutes: int) -> None:
        if self.settings.broadcast_channel and not incident.is_drill:
            self.flows.broadcast(
                incident,
                blocks.escalation_text(incident, minutes),
                f"has had no update for {minutes} min",
            )
        elif ic:
            text, _ = (
                blocks.mark_drill(blocks.escalation_text(incident, minutes), None)
                if incident.is_drill
                else (blocks.escalation_text(incident, minutes), None)
            )
            self.flows._try(lambda: self.gateway.post_message(ic, text))
