"""Builds the Bolt app around the gateway's WebClient and registers the listeners."""

from __future__ import annotations

import logging
from concurrent.futures import Executor

from slack_bolt import App, BoltRequest, BoltResponse

from incidentbot.config import Settings
from incidentbot.slack import listeners
from incidentbot.slack.closing import ClosingWorkflows
from incidentbot.slack.handoff import Handoff
from incidentbot.slack.paging import PagingWorkflows
from incidentbot.slack.response import ResponseWorkflows
from incidentbot.slack.workflows import IncidentWorkflows


def build_bolt_app(
    settings: Settings, flows: IncidentWorkflows, response: ResponseWorkflows,
    closing: ClosingWorkflows, paging: PagingWorkflows, work: Executor, *,
    replaying: bool = False,
) -> App:
    """A Bolt app that verifies signatures and answers Slack as soon as a listener returns.

    Listeners only validate and ack; what follows an ack runs on `work`. So Bolt runs them
    in the request's own thread (`process_before_response`), which answers at once, where
    its default hands each listener to another thread and polls for the ack every 10 ms.
    A worker's app is `replaying` inbox requests, verified when they arrived.
    """
    app = HandingOffApp(
        client=flows.gateway.client,
        signing_secret=settings.slack_signing_secret or None,
        process_before_response=True,
        request_verification_enabled=not replaying,
        logger=logging.getLogger("incidentbot.bolt"),
    )
    listeners.register(app, flows, response, closing, paging, work, replaying=replaying)
    app.handoff = work if isinstance(work, Handoff) else None
    return app


class HandingOffApp(App):
    """A Bolt app whose requests, once their listener has run, go through `handoff`."""

    handoff: Handoff | None = None

    def dispatch(self, req: BoltRequest) -> BoltResponse:
        if self.handoff is None:
            return super().dispatch(req)
        return self.handoff.dispatch(req, super().dispatch)
