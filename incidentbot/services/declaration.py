"""Declaring an incident (its channel, card and announcements) and changing who holds
which role, its severity and its status."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from incidentbot.core import lifecycle, timeline, updates
from incidentbot.core.lifecycle import Change, Declaration
from incidentbot.core.naming import channel_name
from incidentbot.core.roles import Role
from incidentbot.core.services import Service
from incidentbot.core.severity import Severity
from incidentbot.core.status import Status
from incidentbot.core.timeline import EventKind
from incidentbot.db import transaction
from incidentbot.models import Incident
from incidentbot.services.context import DB_DOWN, Context, UserFacingError, describe_slack_error
from incidentbot.slack import blocks
from incidentbot.slack.gateway import SlackCallFailed

log = logging.getLogger(__name__)


@dataclass
class DeclareResult:
    incident: Incident
    created: bool = True
    problems: list[str] = field(default_factory=list)


class DeclarationService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def open_incidents_for(self, user_id: str) -> list[Incident]:
        """Open incidents this user may see: public ones and private ones they are in."""
        incidents = self.ctx.open_incidents()
        if not any(i.is_private for i in incidents):
            return incidents
        private = self.ctx.visible_private_channels(user_id) or set()
        return [i for i in incidents if not i.is_private or i.channel_id in private]

    def plan_all_reminders(self) -> int:
        """At start: make every open incident's reminder job match its clock in the database
        (jobs already right, as after a restart, are left alone)."""
        with self.ctx.reading() as session:
            clocks = lifecycle.open_update_clocks(session)
        planned = self.ctx.scheduler.planned()
        moved: list[tuple[int, datetime]] = []
        for incident_id, due in clocks:
            stored = planned.get(incident_id)
            if due is None:
                if stored is not None:
                    self.ctx.scheduler.cancel(incident_id)
            elif stored is None or abs(stored - due.timestamp()) >= 0.001:
                moved.append((incident_id, due))
        self.ctx.scheduler.plan_many("reminder", moved)
        return len(clocks)

    def refresh_recent_cards(self, within: timedelta = timedelta(hours=24)) -> None:
        """At start: bring the cards of recently active open incidents up to date, in case
        the process died between recording a change and updating the card."""
        try:
            incidents = self.ctx.open_incidents()
        except UserFacingError:
            return
        cutoff = self.ctx.clock() - within
        for incident in incidents:
            if incident.updated_at >= cutoff:
                self.ctx.refresh(incident.id)

    def declare(self, declaration: Declaration) -> DeclareResult:
        """Create the channel, record the incident, then invite, set topic, post and pin."""
        lifecycle.validate_title(declaration.title)
        if declaration.request_key:
            with self.ctx.reading() as session:
                existing = lifecycle.find_by_request_key(session, declaration.request_key)
            if existing:
                return self._resume(existing)
        now = self.ctx.clock()
        prefix = "drill" if declaration.is_drill else self.ctx.settings.incident_channel_prefix
        base = channel_name(prefix, now, declaration.title)
        try:
            channel = self.ctx.gateway.create_channel(base, is_private=declaration.is_private)
        except SlackCallFailed as exc:
            log.error("Could not create incident channel %s: %s", base, exc)
            raise UserFacingError(
                f"I could not create the incident channel: {describe_slack_error(exc)}. "
                "No incident was declared."
            ) from None
        incident = self._record_declaration(declaration, channel.id, channel.name, now)
        if incident.channel_id != channel.id:  # a redelivery won the race; drop our channel
            self.ctx.try_slack(lambda: self.ctx.gateway.archive_channel(channel.id))
            return DeclareResult(incident, created=False)
        self.ctx.telemetry.incident_declared(incident)
        problems = self._open_channel(incident)
        self.ctx.plan_reminder(incident)
        return DeclareResult(incident, problems=problems)

    def _resume(self, incident: Incident) -> DeclareResult:
        """A declaration run again (its job restarted after a crash): finish opening the
        channel: all of it if the card was never posted, else pin the card and set the topic
        if that was cut short."""
        problems: list[str] = []
        if not incident.card_ts:
            problems = self._open_channel(incident)
        else:
            with self.ctx.reading() as session:
                pinned = timeline.recorded(session, incident.id, EventKind.CARD_PINNED)
            card_ts = incident.card_ts
            if not pinned:
                self._step(incident, EventKind.CARD_PINNED, "Incident card pinned",
                           lambda: self.ctx.gateway.pin(incident.channel_id, card_ts), problems)
            self.ctx.set_topic(incident)
        self.ctx.plan_reminder(incident)
        return DeclareResult(incident, created=False, problems=problems)

    def _record_declaration(
        self, declaration: Declaration, channel_id: str, name: str, now: datetime
    ) -> Incident:
        try:
            with transaction(self.ctx.sessions) as session:
                incident = lifecycle.record_declaration(
                    session, declaration, channel_id=channel_id, channel_name=name, now=now
                )
                updates.start_clock(incident, self.ctx.interval(incident.severity))
                return incident
        except IntegrityError:
            if declaration.request_key:
                with self.ctx.reading() as session:
                    existing = lifecycle.find_by_request_key(session, declaration.request_key)
                if existing:
                    return existing
            raise
        except SQLAlchemyError:
            log.exception("Could not record incident for channel %s; archiving it", channel_id)
            self.ctx.try_slack(lambda: self.ctx.gateway.archive_channel(channel_id))
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
                            lambda: self.ctx.gateway.invite(channel, [incident.declared_by]),
                            problems)
            side.submit(self._step, incident, EventKind.TOPIC_SET,
                        f"Topic set: {blocks.topic(incident)}",
                        lambda: self._set_first_topic(incident), problems)
            side.submit(self.ctx.broadcast, incident,
                        f":rotating_light: *{incident.severity}* incident declared: "
                        f"{blocks.escape(incident.title)} in <#{incident.channel_id}>",
                        "was declared")
            self._post_card(incident, side, problems)
            self.ctx.try_slack(
                lambda: self.ctx.say(incident, blocks.declared_announcement(incident)))
            service = self.ctx.catalog.get(incident.service) if incident.service else None
            if service is not None:
                self._bring_in_service(incident, service, problems)
        return problems

    def _post_card(self, incident: Incident, side: ThreadPoolExecutor,
                   problems: list[str]) -> None:
        """Post the card, then pin it (on `side`, while the rest goes on)."""
        card_ts = self._step(
            incident, EventKind.CARD_POSTED, "Incident card posted",
            lambda: self.ctx.gateway.post_message(
                incident.channel_id, blocks.card_text(incident), blocks.incident_card(incident)),
            problems,
        )
        if isinstance(card_ts, str):
            with transaction(self.ctx.sessions) as session:
                lifecycle.set_card(session, incident, card_ts)
            side.submit(self._step, incident, EventKind.CARD_PINNED, "Incident card pinned",
                        lambda: self.ctx.gateway.pin(incident.channel_id, card_ts), problems)

    def _bring_in_service(self, incident: Incident, service: Service,
                          problems: list[str]) -> None:
        """Bookmark the runbook, invite the owners, post the runbook link."""
        channel = incident.channel_id
        if service.runbook:
            self._step(incident, EventKind.RUNBOOK_LINKED, f"Runbook bookmarked: {service.runbook}",
                       lambda: self.ctx.gateway.add_bookmark(channel, f"Runbook: {service.name}",
                                                         service.runbook), problems)
        owners: set[str] = set()
        for owner in service.owners:
            owners |= self.ctx.gateway.usergroup_members(owner) if owner[:1] == "S" else {owner}
        owners.discard(incident.declared_by)
        if owners:
            self._step(incident, EventKind.MEMBER_INVITED,
                       f"Owners of {service.name} invited: "
                       + ", ".join(f"<@{o}>" for o in sorted(owners)),
                       lambda: self.ctx.gateway.invite(channel, sorted(owners)), problems)
        if service.runbook:
            self.ctx.try_slack(lambda: self.ctx.say(incident, blocks.runbook_text(service.name,
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
            self.ctx.record(incident.id, EventKind.SLACK_ERROR, f"{kind.value} failed: {exc.error}",
                         data={"method": exc.method, "error": exc.error})
            return None
        self.ctx.record(incident.id, kind, text)
        return result

    def _set_first_topic(self, incident: Incident) -> bool:
        topic = blocks.topic(incident)
        self.ctx.gateway.set_topic(incident.channel_id, topic)
        with transaction(self.ctx.sessions) as session:
            lifecycle.set_topic(session, incident.id, topic)
        incident.topic = topic
        return True

    def assign_role(self, incident_id: int, role: Role, user_id: str, by: str) -> Change:
        """Give a role to a person (checked to be a real, active human), announce, refresh."""
        self.ctx.require_person(user_id)
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            if role is Role.IC and incident.holder(Role.IC.value) not in (None, user_id):
                self.ctx.authorize(incident, by, "hand off incident command")
            change = lifecycle.assign_role(session, incident, role, user_id, by, self.ctx.clock())
        if change.changed:
            self.ctx.try_slack(
                lambda: self.ctx.gateway.invite_missing(incident.channel_id, [user_id]))
            self.ctx.try_slack(
                lambda: self.ctx.say(incident, blocks.role_text(role, user_id, change.old)))
            self.ctx.refresh(incident_id)
        return change

    def change_severity(self, incident_id: int, severity: Severity, by: str) -> Change:
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            if incident.severity != severity.value:
                self.ctx.authorize(incident, by, "change the severity")
            change = lifecycle.change_severity(session, incident, severity, by, self.ctx.clock())
            if change.changed:
                updates.replan(incident, self.ctx.interval(incident.severity), self.ctx.clock())
        if change.changed:
            self.ctx.plan_reminder(incident)
            self._announce(incident, f":rotating_light: Severity changed from *{change.old}* to "
                                     f"*{change.new}* by <@{by}>.")
        return change

    def change_status(self, incident_id: int, status: Status, by: str) -> Change:
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            change = lifecycle.change_status(session, incident, status, by, self.ctx.clock())
            reopened = change.old is not None and not Status(change.old).is_open
            if change.changed and status.is_open and reopened:
                updates.replan(incident, self.ctx.interval(incident.severity), self.ctx.clock())
        if change.changed:
            self.ctx.plan_reminder(incident)
            old, new = Status(change.old or status), Status(change.new)
            self._announce(incident, f":arrows_counterclockwise: Status changed from "
                                     f"*{old.label}* to *{new.label}* by <@{by}>.")
        return change

    def _announce(self, incident: Incident, text: str) -> None:
        self.ctx.try_slack(lambda: self.ctx.say(incident, text))
        self.ctx.refresh(incident.id)

