"""Paging a service's escalation path by DM, with an Acknowledge button."""

from __future__ import annotations

import logging

from incidentbot.core import lifecycle, paging
from incidentbot.core.paging import PageStep
from incidentbot.db import transaction
from incidentbot.models import Incident, Page
from incidentbot.services.context import Context, UserFacingError
from incidentbot.slack import blocks

log = logging.getLogger(__name__)


class PagingService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def minutes(self) -> float:
        return self.ctx.settings.escalation_minutes

    def page(self, incident_id: int, service_name: str, by: str) -> Page:
        """Page the service's primary (and manager too for SEV1)."""
        with self.ctx.writing() as session:
            incident = lifecycle.get_incident(session, incident_id)
            name = service_name or incident.service
            service = self.ctx.catalog.get(name) if name else None
            if service is None:
                known = ", ".join(self.ctx.catalog.names) or "none configured"
                raise UserFacingError(
                    f"I don't know the service `{blocks.escape(name or '(none)')}`. Use "
                    f"`/incident page <service>`; services: {known}.")
            step = paging.start_page(session, incident, service, by, self.minutes,
                                     self.ctx.clock())
        self._notify(incident, step)
        return step.page

    def escalate_due(self, page_id: int) -> None:
        """Scheduler callback: nobody acknowledged in time, so go one step up the path."""
        try:
            with transaction(self.ctx.sessions) as session:
                page = session.get(Page, page_id, with_for_update=True)
                if page is None:
                    return
                step = paging.escalate(session, page, self.minutes,
                                       self.ctx.settings.page_repeats, self.ctx.clock())
                incident = lifecycle.get_incident(session, page.incident_id)
        except Exception:
            log.exception("Escalating page %s failed", page_id)
            return
        if step is not None:
            self._notify(incident, step)

    def acknowledge(self, page_id: int, by: str) -> Page:
        with self.ctx.writing() as session:
            page = paging.acknowledge(session, page_id, by, self.ctx.clock())
            incident = lifecycle.get_incident(session, page.incident_id)
        self.ctx.scheduler.plan_page(page.id, None)
        if page.acknowledged_by == by:
            self.ctx.try_slack(lambda: self.ctx.say(
                incident, f":white_check_mark: <@{by}> acknowledged the page for "
                          f"*{blocks.escape(page.service)}*."))
            self.ctx.try_slack(lambda: self.ctx.gateway.invite_missing(incident.channel_id, [by]))
        return page

    def replan_pending(self) -> int:
        """On becoming the scheduler leader: every unacknowledged page gets its job back."""
        with self.ctx.reading() as session:
            pages = paging.pending_pages(session)
        for page in pages:
            self.ctx.scheduler.plan_page(page.id, page.next_escalation_at)
        return len(pages)

    def _notify(self, incident: Incident, step: PageStep) -> None:
        if step.unanswered:
            self._tell_unanswered(incident, step)
        for user in step.notify:
            text, message = blocks.page_message(incident, step.page)
            if incident.is_drill:
                text, message = blocks.mark_drill(text, message)
            self.ctx.try_slack(
                lambda u=user, t=text, m=message: self.ctx.gateway.post_message(u, t, m))
        if step.notify:
            people = ", ".join(f"<@{u}>" for u in step.notify)
            again = " (escalated)" if step.page.step else (" (again)" if step.unanswered else "")
            self.ctx.try_slack(lambda: self.ctx.say(
                incident, f":pager: Paged {people} for *{blocks.escape(step.page.service)}*"
                          f"{again}."))
        self.ctx.scheduler.plan_page(step.page.id, step.escalate_at)

    def _tell_unanswered(self, incident: Incident, step: PageStep) -> None:
        """The whole path went unanswered: say so in the channel and the broadcast channel."""
        text = blocks.unanswered_page_text(incident, step, self.ctx.settings.page_repeats)
        self.ctx.try_slack(lambda: self.ctx.say(incident, text))
        self.ctx.broadcast(incident, text, "has a page nobody acknowledged")
