"""Use cases that span the core and Slack: each runs core functions in one transaction and
then makes the Slack side (channel, card, topic, announcements) match what was recorded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from incidentbot.config import Settings
from incidentbot.core import lifecycle, security, timeline, updates
from incidentbot.core.errors import IncidentError
from incidentbot.core.lifecycle import Change, Declaration
from incidentbot.core.naming import channel_name
from incidentbot.core.roles import Role
from incidentbot.core.services import Service, load_catalog
from incidentbot.core.severity import Severity
from incidentbot.core.status import Status
from incidentbot.core.timeline import EventKind
from incidentbot.db import insert_ignore, transaction
from incidentbot.models import Incident, SeenRequest, TimelineEvent, utcnow
from incidentbot.reminders import ReminderScheduler
from incidentbot.slack import blocks
from incidentbot.slack.gateway import SlackCallFailed, SlackGateway

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


@dataclass
class DeclareResult:
    incident: Incident
    created: bool = True
    problems: list[str] = field(default_factory=list)


class IncidentWorkflows:
    """Declare and run incidents: the core records, the gateway tells Slack."""

    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], gateway: SlackGateway,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.gateway = gateway
        self.clock = clock
        self.reminders: ReminderScheduler | None = None
        self.catalog = load_catalog(settings.services_file)
        self._remembered = 0

    def interval(self, severity: str) -> float:
        return self.settings.reminder_minutes(Severity(severity))

    def plan_reminder(self, incident: Incident) -> None:
        """Mirror the incident's update clock into the scheduler."""
        if self.reminders is None:
            return
        due = incident.next_update_due_at if Status(incident.status).is_open else None
        self.reminders.plan(incident.id, due)

    def plan_all_reminders(self) -> int:
        """At start: make every open incident's reminder job match its clock in the database
        (jobs already right, as after a restart, are left alone)."""
        if self.reminders is None:
            return 0
        with self._unit() as session:
            clocks = lifecycle.open_update_clocks(session)
        planned = self.reminders.planned()
        moved: list[tuple[int, datetime]] = []
        for incident_id, due in clocks:
            stored = planned.get(incident_id)
            if due is None:
                if stored is not None:
                    self.reminders.cancel(incident_id)
            elif stored is None or abs(stored - due.timestamp()) >= 0.001:
                moved.append((incident_id, due))
        self.reminders.plan_many("reminder", moved)
        return len(clocks)

    # -- reading -----------------------------------------------------------------------

    def incident_for_channel(self, channel_id: str) -> Incident | None:
        with self._unit() as session:
            return lifecycle.get_by_channel(session, channel_id)

    def incident_by_id(self, incident_id: int) -> Incident:
        with self._unit() as session:
            return lifecycle.get_incident(session, incident_id)

    def open_incidents(self) -> list[Incident]:
        with self._unit() as session:
            return lifecycle.list_open(session)

    def open_incidents_for(self, user_id: str) -> list[Incident]:
        """Open incidents this user may see: public ones and private ones they are in."""
        incidents = self.open_incidents()
        if not any(i.is_private for i in incidents):
            return incidents
        private = self.visible_private_channels(user_id) or set()
        return [i for i in incidents if not i.is_private or i.channel_id in private]

    # -- declaring ---------------------------------------------------------------------

    def declare(self, declaration: Declaration) -> DeclareResult:
        """Create the channel, record the incident, then invite, set topic, post and pin."""
        lifecycle.validate_title(declaration.title)
        if declaration.request_key:
            with self._unit() as session:
                existing = lifecycle.find_by_request_key(session, declaration.request_key)
            if existing:
                return self._resume(existing)
        now = self.clock()
        prefix = "drill" if declaration.is_drill else self.settings.incident_channel_prefix
        base = channel_name(prefix, now, declaration.title)
        try:
            channel = self.gateway.create_channel(base, is_private=declaration.is_private)
        except SlackCallFailed as exc:
            log.error("Could not create incident channel %s: %s", base, exc)
            raise UserFacingError(
                f"I could not create the incident channel: {describe_slack_error(exc)}. "
                "No incident was declared."
            ) from None
        incident = self._record_declaration(declaration, channel.id, channel.name, now)
        if incident.channel_id != channel.id:  # a redelivery won the race; drop our channel
            self._try(lambda: self.gateway.archive_channel(channel.id))
            return DeclareResult(incident, created=False)
        problems = self._open_channel(incident)
        self.plan_reminder(incident)
        return DeclareResult(incident, problems=problems)

    def _resume(self, incident: Incident) -> DeclareResult:
        """A declaration run again (its job restarted after a crash): finish opening the
        channel if the card was never posted."""
        if incident.card_ts:
            return DeclareResult(incident, created=False)
        problems = self._open_channel(incident)
        self.plan_reminder(incident)
        return DeclareResult(incident, created=False, problems=problems)

    def _record_declaration(
        self, declaration: Declaration, channel_id: str, name: str, now: datetime
    ) -> Incident:
        try:
            with transaction(self.sessions) as session:
                incident = lifecycle.record_declaration(
                    session, declaration, channel_id=channel_id, channel_name=name, now=now
                )
                updates.start_clock(incident, self.interval(incident.severity))
                return incident
        except IntegrityError:
            if declaration.request_key:
                with self._unit() as session:
                    existing = lifecycle.find_by_request_key(session, declaration.request_key)
                if existing:
                    return existing
            raise
        except SQLAlchemyError:
            log.exception("Could not record incident for channel %s; archiving it", channel_id)
            self._try(lambda: self.gateway.archive_channel(channel_id))
            raise UserFacingError(DB_DOWN + " (The channel I had created was archived.)") from None

    def _open_channel(self, incident: Incident) -> list[str]:
        """Invite the declarer, set the topic, post and pin the card, announce; each step is
        recorded. Steps that do not wait on each other go to Slack at the same time, so the
        channel is ready after create → post card → pin."""
        problems: list[str] = []
        channel = incident.channel_id
        with ThreadPoolExecutor(4, thread_name_prefix="declare") as side:
            if blocks.USER_ID.match(incident.declared_by):
                side.submit(self._step, incident, EventKind.MEMBER_INVITED,
                            f"<@{incident.declared_by}> invited",
                            lambda: self.gateway.invite(channel, [incident.declared_by]),
                            problems)
            side.submit(self._step, incident, EventKind.TOPIC_SET,
                        f"Topic set: {blocks.topic(incident)}",
                        lambda: self._set_first_topic(incident), problems)
            side.submit(self.broadcast, incident,
                        f":rotating_light: *{incident.severity}* incident declared: "
                        f"{blocks.escape(incident.title)} in <#{incident.channel_id}>",
                        "was declared")
            self._post_card(incident, side, problems)
            self._try(lambda: self.say(incident, blocks.declared_announcement(incident)))
            service = self.catalog.get(incident.service) if incident.service else None
            if service is not None:
                self._bring_in_service(incident, service, problems)
        return problems

    def _post_card(self, incident: Incident, side: ThreadPoolExecutor,
                   problems: list[str]) -> None:
        """Post the card, then pin it (on `side`, while the rest goes on)."""
        card_ts = self._step(
            incident, EventKind.CARD_POSTED, "Incident card posted",
            lambda: self.gateway.post_message(
                incident.channel_id, blocks.card_text(incident), blocks.incident_card(incident)),
            problems,
        )
        if isinstance(card_ts, str):
            with transaction(self.sessions) as session:
                lifecycle.set_card(session, incident, card_ts)
            side.submit(self._step, incident, EventKind.CARD_PINNED, "Incident card pinned",
                        lambda: self.gateway.pin(incident.channel_id, card_ts), problems)

    def _bring_in_service(self, incident: Incident, service: Service,
                          problems: list[str]) -> None:
        """Bookmark the runbook, invite the owners, post the runbook link."""
        channel = incident.channel_id
        if service.runbook:
            self._step(incident, EventKind.RUNBOOK_LINKED, f"Runbook bookmarked: {service.runbook}",
                       lambda: self.gateway.add_bookmark(channel, f"Runbook: {service.name}",
                                                         service.runbook), problems)
        owners: set[str] = set()
        for owner in service.owners:
            owners |= self.gateway.usergroup_members(owner) if owner[:1] == "S" else {owner}
        owners.discard(incident.declared_by)
        if owners:
            self._step(incident, EventKind.MEMBER_INVITED,
                       f"Owners of {service.name} invited: "
                       + ", ".join(f"<@{o}>" for o in sorted(owners)),
                       lambda: self.gateway.invite(channel, sorted(owners)), problems)
        if service.runbook:
            self._try(lambda: self.say(incident, blocks.runbook_text(service.name,
                                                                     service.runbook)))

    def _step(
        self, incident: Incident, kind: EventKind, text: str, action: Callable[[], object],
        problems: list[str],
    ) -> object:
        """Run one Slack step and record it, or record and report its failure."""
        try:
            result = action()
        except SlackCallFailed as exc:
            problems.append(describe_slack_error(exc))
            self._record(incident.id, EventKind.SLACK_ERROR, f"{kind.value} failed: {exc.error}",
                         data={"method": exc.method, "error": exc.error})
            return None
        self._record(incident.id, kind, text)
        return result

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
        self._try(lambda: self.gateway.post_message(target, text))

    # -- changing ----------------------------------------------------------------------

    def assign_role(self, incident_id: int, role: Role, user_id: str, by: str) -> Change:
        """Give a role to a person (checked to be a real, active human), announce, refresh."""
        self.require_person(user_id)
        with self._writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            if role is Role.IC and incident.holder(Role.IC.value) not in (None, user_id):
                self.authorize(incident, by, "hand off incident command")
            change = lifecycle.assign_role(session, incident, role, user_id, by, self.clock())
        if change.changed:
            self._try(lambda: self.gateway.invite(incident.channel_id, [user_id]))
            self._try(lambda: self.say(incident, blocks.role_text(role, user_id, change.old)))
            self.refresh(incident_id)
        return change

    def change_severity(self, incident_id: int, severity: Severity, by: str) -> Change:
        with self._writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            if incident.severity != severity.value:
                self.authorize(incident, by, "change the severity")
            change = lifecycle.change_severity(session, incident, severity, by, self.clock())
            if change.changed:
                updates.replan(incident, self.interval(incident.severity), self.clock())
        if change.changed:
            self.plan_reminder(incident)
            self._announce(incident, f":rotating_light: Severity changed from *{change.old}* to "
                                     f"*{change.new}* by <@{by}>.")
        return change

    def change_status(self, incident_id: int, status: Status, by: str) -> Change:
        with self._writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            change = lifecycle.change_status(session, incident, status, by, self.clock())
            reopened = change.old is not None and not Status(change.old).is_open
            if change.changed and status.is_open and reopened:
                updates.replan(incident, self.interval(incident.severity), self.clock())
        if change.changed:
            self.plan_reminder(incident)
            old, new = Status(change.old or status), Status(change.new)
            self._announce(incident, f":arrows_counterclockwise: Status changed from "
                                     f"*{old.label}* to *{new.label}* by <@{by}>.")
        return change

    def _announce(self, incident: Incident, text: str) -> None:
        self._try(lambda: self.say(incident, text))
        self.refresh(incident.id)

    def refresh_recent_cards(self, within: timedelta = timedelta(hours=24)) -> None:
        """At start: bring the cards of recently active open incidents up to date, in case
        the process died between recording a change and updating the card."""
        try:
            incidents = self.open_incidents()
        except UserFacingError:
            return
        cutoff = self.clock() - within
        for incident in incidents:
            if incident.updated_at >= cutoff:
                self.refresh(incident.id)

    def refresh(self, incident_id: int) -> None:
        """Bring the pinned card and the topic in line with the database."""
        with self._unit() as session:
            incident = lifecycle.get_incident(session, incident_id)
            latest = updates.latest_update(session, incident_id)
        if incident.card_ts:
            self._try(lambda: self.gateway.update_message(
                incident.channel_id, incident.card_ts or "", blocks.card_text(incident),
                blocks.incident_card(incident, latest)))
        self.set_topic(incident)

    def _set_first_topic(self, incident: Incident) -> bool:
        topic = blocks.topic(incident)
        self.gateway.set_topic(incident.channel_id, topic)
        with transaction(self.sessions) as session:
            lifecycle.set_topic(session, incident.id, topic)
        incident.topic = topic
        return True

    def set_topic(self, incident: Incident) -> None:
        """Set the channel topic when its text changed (`setTopic` is rate-limited hard)."""
        topic = blocks.topic(incident)
        if topic == incident.topic:
            return
        if self._try(lambda: self.gateway.set_topic(incident.channel_id, topic)) is None:
            return
        with transaction(self.sessions) as session:
            lifecycle.set_topic(session, incident.id, topic)

    def remember_request(self, signature: str) -> bool:
        """False if this exact signed request was accepted before (a replay)."""
        now = self.clock()
        with transaction(self.sessions) as session:
            fresh = insert_ignore(session, SeenRequest.__table__,
                                  security.ledger_row(signature, now), security.LEDGER_KEY)
        self._remembered += 1
        if self._remembered % 500 == 0:
            with transaction(self.sessions) as session:
                security.forget_old_requests(session, now)
        return fresh

    def forget_request(self, signature: str) -> None:
        with transaction(self.sessions) as session:
            security.forget_request(session, signature)

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

    # -- plumbing ----------------------------------------------------------------------

    def _unit(self) -> Session:
        """A read-only unit of work; database failures become a user-facing error."""
        return _Guarded(self.sessions, commit=False)  # type: ignore[return-value]

    def _writing(self) -> Session:
        return _Guarded(self.sessions, commit=True)  # type: ignore[return-value]

    def _record(self, incident_id: int, kind: EventKind, text: str,
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
    def _try(action: Callable[[], object]) -> object:
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


__all__ = ["DB_DOWN", "DeclareResult", "IncidentError", "IncidentWorkflows", "UserFacingError"]
