"""What every service shares: settings, sessions, the Slack gateway, the clock and the
scheduler, with the steps they all take (read or write in one transaction, record a
timeline event, post in the channel, announce, refresh the card)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from incidentbot.config import Settings
from incidentbot.core import lifecycle, security, timeline, updates
from incidentbot.core.services import load_catalog
from incidentbot.core.severity import Severity
from incidentbot.core.status import Status
from incidentbot.core.timeline import EventKind
from incidentbot.db import insert_ignore, transaction
from incidentbot.jobs.scheduler import ReminderScheduler
from incidentbot.models import Incident, TimelineEvent, utcnow
from incidentbot.slack import blocks
from incidentbot.slack.gateway import SlackCallFailed, SlackGateway
from incidentbot.telemetry import Telemetry

log = logging.getLogger(__name__)

DB_DOWN = (
    ":warning: I can't record this right now (the incident database is unavailable), so "
    "nothing was changed. Please try again in a minute."
)

SLACK_ERROR_HINTS = {
    "name_taken": "every channel name I tried was taken",
    "restricted_action": "this workspace does not let the bot create channels",
    "channel_not_found": "Slack could not find the channel",
    "not_in_channel": "the bot is not a member of the channel",
    "is_archived": "the channel is archived",
    "ratelimited": "Slack is rate-limiting the bot",
    "connection_error": "Slack could not be reached",
    "invalid_auth": "the bot token is invalid",
}


def describe_slack_error(error: SlackCallFailed) -> str:
    hint = SLACK_ERROR_HINTS.get(error.error, "Slack answered an error")
    return f"{hint} (`{error.method}`: `{error.error}`)"


class UserFacingError(Exception):
    """Something went wrong that the person who asked must hear about, in these words."""



class Context:
    """The shared parts of the services, and the steps they all take."""

    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], gateway: SlackGateway,
        scheduler: ReminderScheduler, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.gateway = gateway
        self.scheduler = scheduler
        self.clock = clock
        self.telemetry: Telemetry = gateway.telemetry  # one set of metrics per bot
        self.catalog = load_catalog(settings.services_file)

    def interval(self, severity: str) -> float:
        return self.settings.reminder_minutes(Severity(severity))

    def plan_reminder(self, incident: Incident) -> None:
        """Mirror the incident's update clock into the scheduler."""
        due = incident.next_update_due_at if Status(incident.status).is_open else None
        self.scheduler.plan(incident.id, due)

    def incident_for_channel(self, channel_id: str) -> Incident | None:
        with self.reading() as session:
            return lifecycle.get_by_channel(session, channel_id)

    def incident_by_id(self, incident_id: int) -> Incident:
        with self.reading() as session:
            return lifecycle.get_incident(session, incident_id)

    def open_incidents(self) -> list[Incident]:
        with self.reading() as session:
            return lifecycle.list_open(session)

    def say(self, incident: Incident, text: str,
            message_blocks: list[dict[str, object]] | None = None, *,
            metadata: dict[str, Any] | None = None) -> str:
        """Post in the incident channel (with Slack message `metadata`, if given);
        everything a drill posts is marked DRILL."""
        if incident.is_drill:
            text, message_blocks = blocks.mark_drill(text, message_blocks)
        return self.gateway.post_message(incident.channel_id, text, message_blocks,
                                         metadata=metadata)

    def broadcast(self, incident: Incident, text: str, private_what: str) -> None:
        """Announce in BROADCAST_CHANNEL: never for a drill, one bare line for a private one."""
        target = self.settings.broadcast_channel
        if not target or incident.is_drill:
            return
        if incident.is_private:
            text = blocks.private_broadcast_line(incident, private_what)
        self.try_slack(lambda: self.gateway.post_message(target, text))

    def refresh(self, incident_id: int) -> None:
        """Bring the pinned card and the topic in line with the database."""
        with self.reading() as session:
            incident = lifecycle.get_incident(session, incident_id)
            latest = updates.latest_update(session, incident_id)
        if incident.card_ts:
            self.try_slack(lambda: self.gateway.update_message(
                incident.channel_id, incident.card_ts or "", blocks.card_text(incident),
                blocks.incident_card(incident, latest)))
        self.set_topic(incident)

    def set_topic(self, incident: Incident) -> None:
        """Set the channel topic when its text changed (`setTopic` is rate-limited hard)."""
        topic = blocks.topic(incident)
        if topic == incident.topic:
            return
        if self.try_slack(lambda: self.gateway.set_topic(incident.channel_id, topic)) is None:
            return
        with transaction(self.sessions) as session:
            lifecycle.set_topic(session, incident.id, topic)

    def authorize(self, incident: Incident, user_id: str, action: str) -> None:
        """Role holders and INCIDENT_ADMINS (users or user groups) may; others are told who."""
        admins = self.settings.admin_ids
        if security.may_command(incident, user_id, admins) or self.is_admin(user_id):
            return
        raise UserFacingError(security.refusal(incident, action, bool(admins)))

    def is_admin(self, user_id: str) -> bool:
        """Named in INCIDENT_ADMINS, directly or through a user group."""
        admins = self.settings.admin_ids
        return user_id in admins or any(
            user_id in self.gateway.usergroup_members(g) for g in admins if g[:1] == "S")

    def visible_private_channels(self, user_id: str) -> set[str] | None:
        """The private channels this user may see incidents of (None: lookup failed)."""
        try:
            return self.gateway.private_channels_of(user_id)
        except SlackCallFailed:
            return None

    def require_person(self, user_id: str) -> None:
        """Refuse bots, deleted accounts and unknown IDs with a clear message."""
        try:
            user = self.gateway.user_info(user_id)
        except SlackCallFailed as exc:
            raise UserFacingError(
                f"I could not look up <@{user_id}>: {describe_slack_error(exc)}.") from None
        if user is None:
            raise UserFacingError(f"`{user_id}` is not a user in this workspace.")
        if user.get("is_bot") or user_id == "USLACKBOT":
            raise UserFacingError(f"<@{user_id}> is a bot; roles go to people.")
        if user.get("deleted"):
            raise UserFacingError(f"<@{user_id}> has been deactivated.")

    def reading(self) -> Session:
        """A read-only unit of work; database failures become a user-facing error."""
        return _Guarded(self.sessions, commit=False)  # type: ignore[return-value]

    def writing(self) -> Session:
        return _Guarded(self.sessions, commit=True)  # type: ignore[return-value]

    def record(self, incident_id: int, kind: EventKind, text: str,
                data: dict[str, Any] | None = None) -> None:
        """Record a bot-side step (a failure to record it is logged, not raised)."""
        row = timeline.event_row(incident_id, kind, text, occurred_at=self.clock(),
                                 data=dict(data or {}))
        try:
            with transaction(self.sessions) as session:
                insert_ignore(session, TimelineEvent.__table__, row, timeline.EVENT_KEY)
        except SQLAlchemyError:
            log.exception("Could not record %s for incident %s", kind, incident_id)

    @staticmethod
    def try_slack(action: Callable[[], object]) -> object:
        """Best-effort Slack call: failures are logged (by the gateway), not raised."""
        try:
            return action()
        except SlackCallFailed:
            return None


class _Guarded:
    """Session context manager that turns database failures into `UserFacingError`."""

    def __init__(self, sessions: sessionmaker[Session], *, commit: bool) -> None:
        self._sessions = sessions
        self._commit = commit
        self._session: Session | None = None

    def __enter__(self) -> Session:
        self._session = self._sessions()
        return self._session

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: object) -> bool:
        session = self._session
        assert session is not None
        try:
            if exc is None and self._commit:
                session.commit()
            elif exc is not None:
                session.rollback()
        except SQLAlchemyError:
            if exc is not None:
                session.close()
                raise UserFacingError(DB_DOWN) from None
            log.exception("Database commit failed")
            session.close()
            raise UserFacingError(DB_DOWN) from None
        session.close()
        if isinstance(exc, SQLAlchemyError):
            log.error("Database error: %s", exc)
            raise UserFacingError(DB_DOWN) from None
        return False


