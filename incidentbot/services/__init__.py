"""Use cases per domain over one shared context (`context.Context`). Each service runs core
functions in one transaction, then makes Slack match what was recorded."""

from __future__ import annotations

from dataclasses import dataclass

from incidentbot.jobs.queue import JobAdmin
from incidentbot.services.alerts import AlertService
from incidentbot.services.closing import ClosingService
from incidentbot.services.context import Context
from incidentbot.services.declaration import DeclarationService
from incidentbot.services.ledger import RequestLedger
from incidentbot.services.paging import PagingService
from incidentbot.services.timeline import TimelineService
from incidentbot.services.updates import UpdateService


@dataclass(frozen=True)
class Services:
    """Every service of a running bot, built over one context."""

    ctx: Context
    declaration: DeclarationService
    timeline: TimelineService
    updates: UpdateService
    closing: ClosingService
    paging: PagingService
    alerts: AlertService
    ledger: RequestLedger
    jobs: JobAdmin

    @classmethod
    def build(cls, ctx: Context, bot_user_id: str) -> Services:
        declaration = DeclarationService(ctx)
        paging = PagingService(ctx)
        return cls(
            ctx=ctx, declaration=declaration, timeline=TimelineService(ctx, bot_user_id),
            updates=UpdateService(ctx), closing=ClosingService(ctx), paging=paging,
            alerts=AlertService(ctx, declaration, paging), ledger=RequestLedger(ctx),
            jobs=JobAdmin(ctx.sessions, ctx.clock),
        )
