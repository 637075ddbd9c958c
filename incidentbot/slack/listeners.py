"""Bolt listeners by kind: each is an `ack` (parse, validate, answer within Slack's 3 s) and,
where there is work to do after it, a `lazy` function that runs as a durable job
(`incidentbot.jobs`). Nothing here touches SQL or builds blocks by hand."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse

from incidentbot.services import Services
from incidentbot.slack.answers import Answers
from incidentbot.slack.modals import Modals
from incidentbot.slack.on_buttons import ButtonListener
from incidentbot.slack.on_commands import CommandListener
from incidentbot.slack.on_events import OTHER_EVENTS, EventListener
from incidentbot.slack.on_forms import FormListener

log = logging.getLogger(__name__)

SORRY = ":warning: Something went wrong on my side and it has been logged. Please try again."


def register(app: App, services: Services) -> None:
    """Attach every listener; the kinds a person waits on come first."""
    answers = Answers(services.ctx.gateway)
    modals = Modals(services, answers)
    commands = CommandListener(services, answers, modals)
    buttons = ButtonListener(services, answers, modals)
    forms = FormListener(services, answers)
    events = EventListener(services.timeline)

    app.command("/incident")(ack=commands.ack, lazy=[commands.run_command])
    app.action(one_of(buttons.clicks))(ack=buttons.ack, lazy=[buttons.run_click])
    app.view(one_of(forms.forms))(ack=forms.ack, lazy=[forms.run_submission])
    app.event("message")(events.on_event)
    app.event(one_of(OTHER_EVENTS))(events.on_event)
    app.error(on_unexpected_error)


def one_of(names: Iterable[str]) -> re.Pattern[str]:
    """A Bolt constraint matching exactly these names."""
    return re.compile("^(?:" + "|".join(re.escape(name) for name in names) + ")$")


def on_unexpected_error(error: Exception, request: BoltRequest,
                        response: BoltResponse | None) -> BoltResponse:
    """An ack that raised: logged once; Slack gets an answer the person can read, not a 500
    (a slash command shows this text, other requests are simply acknowledged)."""
    log.error("Unexpected error answering %s: %s", _kind(request.body), error, exc_info=error)
    if request.body.get("command"):
        return BoltResponse(status=200, body={"response_type": "ephemeral", "text": SORRY})
    return BoltResponse(status=200, body="")


def _kind(body: dict[str, Any]) -> str:
    return str(body.get("command") or body.get("type") or "a request")
