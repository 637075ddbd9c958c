"""How the bot answers the person who asked: through a command's `response_url`, an
ephemeral message in the channel, or a DM; and how the work after an ack reports failure."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from incidentbot.core.errors import IncidentError
from incidentbot.jobs.runner import LAST_ATTEMPT
from incidentbot.services.context import UserFacingError, describe_slack_error
from incidentbot.slack.gateway import SlackCallFailed, SlackGateway

log = logging.getLogger(__name__)

Reply = Callable[[str], None]
TRIGGER_TTL_S = 3.0  # Slack's lifetime of a trigger_id
TRIGGER_MARGIN_S = 0.3  # views.open needs a round trip of its own


class Answers:
    def __init__(self, gateway: SlackGateway) -> None:
        self.gateway = gateway

    def responder(self, response_url: str) -> Reply:
        def send(text: str) -> None:
            if response_url:
                self.gateway.respond(response_url, text)
        return send

    def ephemeral(self, channel: str, user: str) -> Reply:
        """Only-visible-to-you in the channel, or a DM when the bot cannot post there."""
        def send(text: str) -> None:
            try:
                self.gateway.post_ephemeral(channel, user, text)
            except SlackCallFailed:
                self.dm(user, text)
        return send

    def dm(self, user: str, text: str) -> None:
        try:
            self.gateway.post_message(user, text)
        except SlackCallFailed:
            log.error("Could not tell %s: %s", user, text)

    def notify(self, metadata: dict[str, Any], user: str) -> Reply:
        """Answer a modal submitter: via the command's response_url, in-channel, or by DM."""
        response_url = metadata.get("response_url")
        channel = metadata.get("channel_id")

        def send(text: str) -> None:
            if isinstance(response_url, str) and response_url and \
                    self.gateway.respond(response_url, text):
                return
            if isinstance(channel, str) and channel:
                self.ephemeral(channel, user)(text)
            else:
                self.dm(user, text)
        return send

    def open_modal(self, trigger_id: str, view: dict[str, Any], reply: Reply,
                   received_at: float | None = None) -> None:
        """Open a modal; a trigger too old to be accepted is not spent on a doomed call."""
        if received_at is not None and \
                time.time() - received_at > TRIGGER_TTL_S - TRIGGER_MARGIN_S:
            reply("Slack's window to open the form passed while I was busy; please click "
                  "again.")
            return
        try:
            self.gateway.open_view(trigger_id, view)
        except SlackCallFailed as exc:
            if exc.error in ("expired_trigger_id", "invalid_trigger_id"):
                reply("Slack took too long to open the form; please try again.")
            else:
                reply(f"I could not open the form: {describe_slack_error(exc)}.")


def guarded(reply: Reply, action: Callable[[], object], context: dict[str, Any]) -> None:
    """Run the work after an ack; the person hears of every failure, never a trace.

    Failures a person can act on are told at once. An unexpected error is raised again so
    the job is retried; the person is told when it was the job's last attempt.
    """
    try:
        action()
    except (UserFacingError, IncidentError) as exc:
        reply(str(exc))
    except SlackCallFailed as exc:
        log.error("Slack call failed: %s", exc)
        reply(f"Something went wrong talking to Slack: {describe_slack_error(exc)}.")
    except Exception:
        if context.get(LAST_ATTEMPT, True):
            reply(":warning: Something went wrong on my side and it has been logged. "
                  "Please try again in a minute.")
        raise
