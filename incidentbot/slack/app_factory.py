"""The Bolt app: the listeners, and lazy work that runs as durable jobs."""

from __future__ import annotations

import logging

from slack_bolt import App
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

from incidentbot.jobs.runner import DurableLazyRunner
from incidentbot.services import Services
from incidentbot.slack import listeners

# Bolt reads SLACK_BOT_TOKEN from the environment itself and warns that the client given
# (built from the same token, with our API URL and retry handlers) takes precedence.
BOLT_LOG = logging.getLogger("incidentbot.bolt")
BOLT_LOG.addFilter(
    lambda record: record.getMessage() != warning_client_prioritized_and_token_skipped())


def build_bolt_app(services: Services, lazy_runner: DurableLazyRunner) -> App:
    """A Bolt app that answers Slack as soon as a listener's ack function returns.

    `process_before_response`: the ack function runs in the request's thread and the
    answer leaves when it returns, after the lazy work was committed as a job. Signatures
    are verified on the raw body before the request reaches Bolt (`incidentbot.slack.intake`),
    and jobs run later through this app, long after their request's timestamp expired.
    """
    app = App(
        client=services.ctx.gateway.client,
        process_before_response=True,
        request_verification_enabled=False,
        logger=BOLT_LOG,
    )
    app.listener_runner.lazy_listener_runner = lazy_runner
    listeners.register(app, services)
    return app
