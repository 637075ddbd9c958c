"""Builds the Bolt app around the gateway's WebClient and registers the listeners."""

from __future__ import annotations

import logging
from concurrent.futures import Executor, ThreadPoolExecutor

from slack_bolt import App

from incidentbot.config import Settings
from incidentbot.slack import listeners
from incidentbot.slack.closing import ClosingWorkflows
from incidentbot.slack.paging import PagingWorkflows
from incidentbot.slack.response import ResponseWorkflows
from incidentbot.slack.workflows import IncidentWorkflows


def build_bolt_app(
    settings: Settings, flows: IncidentWorkflows, response: ResponseWorkflows,
    closing: ClosingWorkflows, paging: PagingWorkflows, work: Executor,
) -> App:
    """A Bolt app that verifies signatures and acks before slow work (listeners run threaded)."""
    app = App(
        client=flows.gateway.client,
        signing_secret=settings.slack_signing_secret or None,
        process_before_response=False,
        # Listeners only validate and ack (the work after it runs on the work pool), but a
        # listener waiting for a thread delays its ack: more than Bolt's default of 5.
        listener_executor=ThreadPoolExecutor(settings.listener_threads,
                                             thread_name_prefix="listener"),
        logger=logging.getLogger("incidentbot.bolt"),
    )
    listeners.register(app, flows, response, closing, paging, work)
    return app
