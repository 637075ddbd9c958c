"""Closing an incident: resolve and reopen, the postmortem draft, action items and stats."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import or_, select

from incidentbot.core import actions, lifecycle, metrics, postmortem, resolution, timeline
from incidentbot.core.resolution import Resolution
from incidentbot.core.status import Status
from incidentbot.core.timeline import EventKind
from incidentbot.models import ActionItem, Incident, Postmortem
from incidentbot.services.context import Context, UserFacingError, describe_slack_error
from incidentbot.slack import blocks
from incidentbot.slack.gateway import SlackCallFailed

log = logging.getLogger(__name__)


class ClosingService:
    """Resolution, postmortem drafts, action items and period statistics."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- resolve and reopen ---------------------------------------------------------------

    def resolve(self, incident_id: int, request: Resolution, by: str) -> Incident:
        """Resolve, stop reminders, announce the all-clear and draft the postmortem."""
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            self.ctx.authorize(incident, by, "resolve it")
            resolution.resolve(session, incident, request, by, self.ctx.clock())
        self.ctx.telemetry.incident_resolved(incident)
        self.ctx.scheduler.cancel(incident.id)
        self.ctx.scheduler.plan_postmortem(incident.id, incident.postmortem_due_at)
        self._plan_archive(incident)
        self.ctx.refresh(incident.id)
        failure: SlackCallFailed | None = None
        try:
            self.ctx.say(
                incident, blocks.all_clear_text(incident), blocks.all_clear_blocks(incident)
            )
        except SlackCallFailed as exc:
            failure = exc
        self._broadcast(
            incident, blocks.all_clear_text(incident, link_channel=True), "has been resolved"
        )
        record = self.draft_postmortem(incident.id, by)
        if failure is not None:
            raise UserFacingError(
                ":warning: The incident is resolved and reminders stopped, but I could not post "
                f"the all-clear in the channel: {describe_slack_error(failure)}."
            )
        if record.file_id is None:
            raise UserFacingError(
                ":warning: The incident is resolved, but the postmortem draft could not be "
                "uploaded; run `/incident postmortem` to try again."
            )
        return incident

    def reopen(self, incident_id: int, by: str) -> None:
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            self.ctx.authorize(incident, by, "reopen it")
            resolution.reopen(
                session, incident, by, self.ctx.interval(incident.severity), self.ctx.clock()
            )
        self.ctx.scheduler.plan_postmortem(incident.id, None)
        self.ctx.scheduler.plan_job("archive_notice", incident.id, None)
        self.ctx.scheduler.plan_job("archive", incident.id, None)
        self.ctx.plan_reminder(incident)
        self.ctx.try_slack(
            lambda: self.ctx.say(
                incident,
                f":leftwards_arrow_with_hook: <@{by}> reopened the incident; "
                "it is back to *Investigating*.",
            )
        )
        self._broadcast(
            incident,
            f":leftwards_arrow_with_hook: {incident.severity} incident "
            f"<#{incident.channel_id}> was reopened.",
            "was reopened",
        )
        self.ctx.refresh(incident.id)

    def _broadcast(self, incident: Incident, text: str, private_what: str) -> None:
        self.ctx.broadcast(incident, text, private_what)

    def postmortem_due(self, incident_id: int) -> None:
        """Scheduler callback: remind the channel that the postmortem draft is due."""
        try:
            incident = self.ctx.incident_by_id(incident_id)
        except (UserFacingError, Exception):
            log.exception("Postmortem reminder for incident %s failed", incident_id)
            return
        if incident.resolved_at is None:
            return
        ic = incident.holder("ic")
        self.ctx.try_slack(
            lambda: self.ctx.say(
                incident,
                f":memo: {blocks.mention(ic)}: the postmortem for this "
                f"{incident.severity} incident is due now. Review the draft, "
                "fill in the root cause and schedule the review meeting.",
            )
        )

    # -- archiving ------------------------------------------------------------------------

    def _plan_archive(self, incident: Incident) -> None:
        days = self.ctx.settings.archive_after_days
        if days <= 0 or incident.resolved_at is None:
            return
        archive_at = incident.resolved_at + timedelta(days=days)
        notice_at = max(archive_at - timedelta(days=1), self.ctx.clock())
        self.ctx.scheduler.plan_job("archive_notice", incident.id, notice_at)
        self.ctx.scheduler.plan_job("archive", incident.id, archive_at)

    def archive_notice(self, incident_id: int) -> None:
        """Scheduler callback: a day before archiving, say so in the channel."""
        incident = self.ctx.incident_by_id(incident_id)
        if Status(incident.status) is not Status.RESOLVED or incident.resolved_at is None:
            return
        archive_at = incident.resolved_at + timedelta(days=self.ctx.settings.archive_after_days)
        self.ctx.try_slack(lambda: self.ctx.say(
            incident, f":file_cabinet: This channel will be archived (never deleted) "
                      f"{blocks.slack_date(archive_at)}. `/incident reopen` keeps it open."))

    def archive(self, incident_id: int) -> None:
        """Scheduler callback: close and archive a resolved incident that has its postmortem;
        never an open one."""
        with self.ctx.reading() as session:
            incident = lifecycle.get_incident(session, incident_id)
            has_postmortem = session.scalar(
                select(Postmortem.id).where(Postmortem.incident_id == incident_id).limit(1))
        if Status(incident.status) is not Status.RESOLVED:
            return
        if not has_postmortem:
            self.draft_postmortem(incident_id, None)
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id, lock=True)
            lifecycle.change_status(session, incident, Status.CLOSED, "incidentbot",
                                    self.ctx.clock())
            timeline.record(session, incident_id, EventKind.ARCHIVED, "Channel archived",
                            occurred_at=self.ctx.clock())
        self.ctx.refresh(incident_id)
        self.ctx.try_slack(lambda: self.ctx.gateway.archive_channel(incident.channel_id))

    # -- postmortem ------------------------------------------------------------------------

    def draft_postmortem(self, incident_id: int, by: str | None) -> Postmortem:
        """Render the draft, upload it into the channel and keep it in the database."""
        with self.ctx.reading() as session:
            data = postmortem.load(session, incident_id)
        configured = self.ctx.settings.postmortem_template
        template = Path(configured) if configured else None
        markdown = postmortem.render(
            data, names=self._names(data), template_path=template, now=self.ctx.clock()
        )
        incident = data.incident
        file_id: str | None = None
        try:
            file_id = self.ctx.gateway.upload_file(
                incident.channel_id,
                filename=f"postmortem-{incident.channel_name}.md",
                content=markdown,
                title=f"Postmortem draft: {incident.title}"[:250],
                comment=(blocks.DRILL_MARK + " · " if incident.is_drill else "")
                + ":memo: Postmortem draft, blameless. Edit it, then review it together.",
            )
        except SlackCallFailed as exc:
            problem = describe_slack_error(exc)
            self.ctx.try_slack(
                lambda: self.ctx.say(
                    incident,
                    ":warning: I drafted the postmortem but could not upload "
                    f"it ({problem}). Run `/incident postmortem` to try again.",
                )
            )
        with self.ctx.writing() as session:
            record = Postmortem(
                incident_id=incident_id,
                markdown=markdown,
                created_by=by,
                file_id=file_id,
                created_at=self.ctx.clock(),
            )
            session.add(record)
            session.flush()
            where = "uploaded" if file_id else "drafted (upload failed)"
            timeline.record(
                session,
                incident_id,
                EventKind.POSTMORTEM,
                f"Postmortem draft {where}",
                actor_id=by,
                occurred_at=self.ctx.clock(),
                data={"file_id": file_id},
            )
        return record

    def _names(self, data: postmortem.PostmortemInput) -> dict[str, str]:
        """Display names of the people in the draft, those mentioned in its timeline too (IDs
        kept if a lookup fails); an alert's source ("Alertmanager") is no one to look up."""
        people = {e.actor_id for e in data.events if e.actor_id}
        people |= {a.user_id for a in data.role_history} | {a.owner_id for a in data.action_items}
        people |= {m for e in data.events for m in postmortem.MENTION.findall(e.text or "")}
        people.add(data.incident.declared_by)
        names: dict[str, str] = {}
        for user_id in sorted(p for p in people if blocks.USER_ID.match(p))[:100]:
            try:
                user = self.ctx.gateway.user_info(user_id)
            except SlackCallFailed:
                continue
            if user:
                names[user_id] = str(user.get("real_name") or user.get("name") or user_id)
        return names

    # -- action items ----------------------------------------------------------------------

    def add_action(
        self,
        incident_id: int,
        *,
        text: str,
        owner_id: str,
        by: str,
        due: date | None,
        priority: str,
        request_key: str | None = None,
    ) -> ActionItem:
        self.ctx.require_person(owner_id)
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id)
            item = actions.add_action(
                session,
                incident,
                text=text,
                owner_id=owner_id,
                by=by,
                due=due,
                priority=priority,
                request_key=request_key,
                now=self.ctx.clock(),
            )
        self.ctx.try_slack(lambda: self.ctx.say(incident, blocks.action_added_text(item)))
        return item

    def complete_action(self, action_id: int, by: str) -> ActionItem:
        with self.ctx.writing() as session:
            return actions.complete_action(session, action_id, by, self.ctx.clock())

    def list_actions(self, incident_id: int) -> tuple[Incident, list[ActionItem]]:
        with self.ctx.reading() as session:
            return (
                lifecycle.get_incident(session, incident_id),
                actions.actions_for(session, incident_id),
            )

    # -- statistics ------------------------------------------------------------------------

    def stats(self, days: float, user_id: str) -> metrics.PeriodStats:
        """Statistics over public incidents and the private ones this user is in."""
        private = self.ctx.visible_private_channels(user_id) or set()
        visible = or_(Incident.is_private.is_(False), Incident.channel_id.in_(sorted(private)))
        with self.ctx.reading() as session:
            return metrics.period_stats(session, days, self.ctx.clock(), visible=visible)
