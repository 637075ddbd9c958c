"""Alerts in: a firing group declares one incident (or joins its open one); resolved
notifications are posted with a Resolve button and never resolve on their own."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict

from incidentbot.core import lifecycle, timeline
from incidentbot.core.alerts import AlertNotice
from incidentbot.core.errors import IncidentError
from incidentbot.core.lifecycle import Declaration
from incidentbot.core.timeline import EventKind
from incidentbot.db import transaction
from incidentbot.models import Incident
from incidentbot.services.context import Context, UserFacingError
from incidentbot.services.declaration import DeclarationService
from incidentbot.services.paging import PagingService
from incidentbot.slack import blocks

log = logging.getLogger(__name__)


class AlertService:
    """Turns alert notifications into incidents and channel posts."""

    def __init__(self, ctx: Context, declaration: DeclarationService,
                 paging: PagingService) -> None:
        self.ctx = ctx
        self.declaration = declaration
        self.paging = paging
        # One notification per group at a time in this process, so a storm makes one
        # channel; across replicas the incident's unique request key decides.
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def receive(self, notice: AlertNotice) -> str:
        """Declare, attach or note the notification; returns what was done."""
        with self._locks[notice.group_key]:
            with self.ctx.reading() as session:
                incident = lifecycle.find_open_by_alert_group(session, notice.group_key)
            if not notice.firing:
                if incident is None:
                    return "ignored: no open incident for this group"
                self._attach(incident, notice)
                return "resolved notice posted"
            if incident is not None:
                return "attached" if self._attach(incident, notice) else "duplicate"
            result = self.declaration.declare(Declaration(
                title=notice.title, declared_by=notice.source, severity=notice.severity,
                service=notice.service, request_key=notice.request_key,
                alert_group_key=notice.group_key,
                description=f"Declared from a {notice.source} alert.",
            ))
            self._attach(result.incident, notice)
            if result.created:
                self._page_on_call(result.incident, notice)
            return "declared" if result.created else "attached"

    def _page_on_call(self, incident: Incident, notice: AlertNotice) -> None:
        """A new alert incident of a catalog service pages its on-call at once (the primary;
        for a SEV1 the manager too), unless AUTO_PAGE is off."""
        if not self.ctx.settings.auto_page or self.ctx.catalog.get(incident.service) is None:
            return
        try:
            self.paging.page(incident.id, incident.service, notice.source)
        except (UserFacingError, IncidentError) as exc:
            log.warning("Could not page the on-call of %s: %s", incident.service, exc)

    def _attach(self, incident: Incident, notice: AlertNotice) -> bool:
        """Post the notification in the incident channel once; False if already posted."""
        digest = hashlib.sha256("\n".join((str(notice.firing), *notice.lines)).encode())
        key = f"alert:{notice.group_key[:80]}:{digest.hexdigest()[:32]}"
        with transaction(self.ctx.sessions) as session:
            event = timeline.record(
                session, incident.id, EventKind.ALERT,
                f"{notice.source} {'firing' if notice.firing else 'resolved'}: {notice.title}",
                actor_id=None, occurred_at=self.ctx.clock(), dedupe_key=key,
                is_key=not notice.firing,
                data={"lines": list(notice.lines), "links": dict(notice.links)})
        if event is None:
            return False
        self.ctx.try_slack(lambda: self.ctx.say(incident, blocks.alert_text(notice),
            blocks.alert_blocks(incident, notice)))
        return True
