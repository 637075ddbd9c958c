"""The replay ledger: signatures of accepted Slack requests, kept a few minutes, so that
a correctly signed request captured and sent again is refused."""

from __future__ import annotations

from incidentbot.core import security
from incidentbot.db import transaction
from incidentbot.services.context import Context

PRUNE_EVERY = 500  # requests between two deletions of expired signatures


class RequestLedger:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._remembered = 0

    def remember_request(self, signature: str) -> bool:
        """False if this exact signed request was accepted before (a replay)."""
        now = self.ctx.clock()
        with transaction(self.ctx.sessions) as session:
            fresh = security.remember(session, signature, now)
        self._remembered += 1
        if self._remembered % PRUNE_EVERY == 0:
            with transaction(self.ctx.sessions) as session:
                security.forget_old_requests(session, now)
        return fresh
