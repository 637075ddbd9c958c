"""Status updates and the reminders that ask for them: posted once, even across a crash."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from incidentbot.core import lifecycle, timeline, updates
from incidentbot.core.roles import Role
from incidentbot.core.status import Status
from incidentbot.core.updates import UpdateRequest
from incidentbot.db import transaction
from incidentbot.models import Incident, StatusUpdate
from incidentbot.services.context import Context, UserFacingError, describe_slack_error
from incidentbot.slack import blocks, reminder_metadata
from incidentbot.slack.gateway import SlackCallFailed

log = logging.getLogger(__name__)

CONFIRM_PAUSES_S = (0.2, 1.0)  # between tries to record a posted reminder


class UpdateService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def latest_update(self, incident_id: int) -> StatusUpdate | None:
        with self.ctx.reading() as session:
            return updates.latest_update(session, incident_id)

    def post_update(self, incident_id: int, request: UpdateRequest) -> StatusUpdate:
        """Record the update, post it in the channel and the broadcast channel, replan."""
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            already = updates.find_update(session, request.request_key)
            update = updates.post_update(
                session,
                incident,
                request,
                now=self.ctx.clock(),
                interval_minutes=self.ctx.interval(incident.severity),
            )
        if already:
            return update
        text = blocks.status_update_text(incident, update)
        failure: SlackCallFailed | None = None
        try:
            ts = self.ctx.say(incident, text)
        except SlackCallFailed as exc:
            failure = exc
        else:
            with transaction(self.ctx.sessions) as session:
                updates.set_update_message(session, update.id, ts)
        self._broadcast_update(incident, update)
        self.ctx.plan_reminder(incident)
        self.ctx.refresh(incident.id)
        if failure is not None:
            raise UserFacingError(
                ":warning: Your update was saved and the reminder clock reset, but I could not "
                f"post it in the channel: {describe_slack_error(failure)}. Please paste it "
                "there yourself."
            )
        return update

    def _broadcast_update(self, incident: Incident, update: StatusUpdate) -> None:
        self.ctx.broadcast(
            incident,
            blocks.status_update_text(incident, update, link_channel=True),
            "posted a status update",
        )

    def snooze(self, incident_id: int, by: str) -> datetime | None:
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            if not Status(incident.status).is_open:
                raise UserFacingError("The incident is no longer open; nothing to snooze.")
            interval = self.ctx.interval(incident.severity)
            due = updates.snooze(session, incident, by, interval, self.ctx.clock())
        self.ctx.plan_reminder(incident)
        self.ctx.refresh(incident.id)
        return due

    def fire_reminder(self, incident_id: int) -> None:
        """Scheduler callback: post the due reminder once, escalate if silent too long."""
        try:
            with transaction(self.ctx.sessions) as session:
                incident = lifecycle.get_incident(session, incident_id, lock=True)
                due = incident.next_update_due_at
                outcome = updates.claim_reminder(
                    session,
                    incident,
                    interval_minutes=self.ctx.interval(incident.severity),
                    now=self.ctx.clock(),
                )
        except Exception:
            log.exception("Reminder for incident %s could not be claimed", incident_id)
            return
        self.ctx.plan_reminder(incident)
        if not outcome.post:
            return
        try:
            ts = self._say_reminder(incident, outcome.claim_key, outcome.minutes_without_update)
        except SlackCallFailed:
            self._retry_reminder_later(incident_id, outcome)
            return
        self.ctx.telemetry.reminder_posted(due, self.ctx.clock())
        self._confirm_reminder(incident_id, outcome.claim_key, ts)
        if outcome.escalate:
            ic = incident.current_roles().get(Role.IC.value)
            self._escalate(incident, ic, outcome.minutes_without_update)
        self.ctx.refresh(incident.id)

    def _say_reminder(self, incident: Incident, claim_key: str | None, minutes: int) -> str:
        """Post the reminder naming the IC and Comms Lead, its claim in the message's
        metadata (see `reminder_metadata`); the message's ts. Raises `SlackCallFailed`."""
        roles = incident.current_roles()
        ic, comms = roles.get(Role.IC.value), roles.get(Role.COMMS.value)
        metadata = None if claim_key is None else \
            reminder_metadata.reminder_metadata(claim_key, incident.id)
        return self.ctx.say(incident, blocks.reminder_text(ic, comms, minutes),
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
                with transaction(self.ctx.sessions) as session:
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
        with transaction(self.ctx.sessions) as session:
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
        incident = self.ctx.incident_by_id(incident_id)
        if not Status(incident.status).is_open:
            return
        ts = self._posted_reminder(incident, claim_key, claimed_at)
        if ts is None:
            minutes = int(
                (self.ctx.clock() - updates.last_activity(incident)).total_seconds() // 60
            )
            posted = self.ctx.try_slack(lambda: self._say_reminder(incident, claim_key, minutes))
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
                self.ctx.gateway.history(incident.channel_id, oldest=oldest, latest=latest),
                claim_key, incident.id)
        except SlackCallFailed as exc:
            log.warning("Could not read the channel of incident %s (%s) to see whether its "
                        "reminder %s was posted; posting it, perhaps a second time",
                        incident.id, exc.error, claim_key)
            return None

    def nudge_stale(self, _target: int = 0) -> int:
        """Scheduler sweep: ask quiet open incidents whether they are still active."""
        after = timedelta(days=self.ctx.settings.stale_after_days)
        with transaction(self.ctx.sessions) as session:
            stale = updates.stale_incidents(session, self.ctx.clock(), after)
            for incident in stale:
                timeline.record(session, incident.id, timeline.EventKind.NUDGED,
                                "Asked whether the incident is still active",
                                occurred_at=self.ctx.clock())
        for incident in stale:
            self.ctx.try_slack(lambda i=incident: self.ctx.say(i, blocks.nudge_text(i)))
        return len(stale)

    def _retry_reminder_later(self, incident_id: int, outcome: updates.ReminderOutcome) -> None:
        """The reminder could not be posted: give up the claim and try again shortly."""
        try:
            with transaction(self.ctx.sessions) as session:
                incident = lifecycle.get_incident(session, incident_id, lock=True)
                updates.release_reminder(
                    session,
                    incident,
                    outcome,
                    self.ctx.clock(),
                    retry_after=timedelta(seconds=self.ctx.settings.reminder_retry_seconds),
                )
        except Exception:
            log.exception("Could not re-plan the reminder of incident %s", incident_id)
            return
        log.warning(
            "Reminder for incident %s not posted; retrying at %s",
            incident_id,
            incident.next_update_due_at,
        )
        self.ctx.plan_reminder(incident)

    def _escalate(self, incident: Incident, ic: str | None, minutes: int) -> None:
        if self.ctx.settings.broadcast_channel and not incident.is_drill:
            self.ctx.broadcast(
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
            self.ctx.try_slack(lambda: self.ctx.gateway.post_message(ic, text))

