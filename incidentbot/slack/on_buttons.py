"""Buttons on the incident card, reminders, pages and action items: ack at once, then work."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, BoltContext

from incidentbot.core.roles import Role
from incidentbot.core.severity import DECISION_TREE, suggest_severity
from incidentbot.jobs.runner import RECEIVED_AT, urgent
from incidentbot.models import Page
from incidentbot.services import Services
from incidentbot.services.context import UserFacingError
from incidentbot.slack import blocks, views
from incidentbot.slack.answers import Answers, Reply, guarded
from incidentbot.slack.forms import choices, read_metadata, view_values
from incidentbot.slack.gateway import SlackCallFailed
from incidentbot.slack.modals import CARD_FORMS, Modals

log = logging.getLogger(__name__)

Click = Callable[[dict[str, Any], dict[str, Any], Reply, BoltContext], None]


def target_id(action: dict[str, Any]) -> int:
    """The id a button carries in its `value` (an incident, a page or an action item)."""
    value = action.get("value")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise UserFacingError("That button no longer points at anything I know; use the card "
                          "pinned in the incident channel.")


class ButtonListener:
    def __init__(self, services: Services, answers: Answers, modals: Modals) -> None:
        self.s = services
        self.answers = answers
        self.modals = modals
        self.clicks: dict[str, Click] = {
            blocks.POST_UPDATE: self._open_update_form,
            blocks.REMINDER_POST_UPDATE: self._open_update_form,
            blocks.REMINDER_SNOOZE: self._snooze,
            **dict.fromkeys(CARD_FORMS, self._open_card_form),
            blocks.RESOLVE: self._open_resolve_form,
            blocks.ADD_ACTION: self._open_action_form,
            blocks.ACTION_DONE: self._complete_action,
            blocks.PAGE_ACK: self._acknowledge_page,
            blocks.PAGE_ACK_COMMAND: self._acknowledge_and_command,
            blocks.CRITERIA: self._suggest_severity,
        }

    def ack(self, ack: Ack) -> None:
        ack()

    @urgent
    def run_click(self, body: dict[str, Any], action: dict[str, Any],
                  context: BoltContext) -> None:
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "") or user
        reply = self.answers.ephemeral(channel, user)
        click = self.clicks[action["action_id"]]
        guarded(reply, lambda: click(body, action, reply, context), context)

    def _open_update_form(self, body: dict[str, Any], action: dict[str, Any], reply: Reply,
                          context: BoltContext) -> None:
        incident = self.s.ctx.incident_by_id(target_id(action))
        self.modals.open_update_form(incident, body["trigger_id"], reply,
                                     context.get(RECEIVED_AT))

    def _open_card_form(self, body: dict[str, Any], action: dict[str, Any], reply: Reply,
                        context: BoltContext) -> None:
        incident = self.s.ctx.incident_by_id(target_id(action))
        self.modals.open_card_form(action["action_id"], incident, body["trigger_id"], reply,
                                   context.get(RECEIVED_AT))

    def _open_resolve_form(self, body: dict[str, Any], action: dict[str, Any], reply: Reply,
                           context: BoltContext) -> None:
        incident = self.s.ctx.incident_by_id(target_id(action))
        self.modals.open_resolve_form(incident, body["trigger_id"], reply, body["user"]["id"],
                                      context.get(RECEIVED_AT))

    def _open_action_form(self, body: dict[str, Any], action: dict[str, Any], reply: Reply,
                          context: BoltContext) -> None:
        incident = self.s.ctx.incident_by_id(target_id(action))
        self.modals.open_action_form(incident, body["trigger_id"], reply,
                                     context.get(RECEIVED_AT))

    def _snooze(self, body: dict[str, Any], action: dict[str, Any], reply: Reply,
                _context: BoltContext) -> None:
        due = self.s.updates.snooze(target_id(action), body["user"]["id"])
        if due is not None:
            reply(f"Snoozed: the next reminder is due {blocks.slack_date(due)}.")

    def _complete_action(self, body: dict[str, Any], action: dict[str, Any], reply: Reply,
                         _context: BoltContext) -> None:
        item = self.s.closing.complete_action(target_id(action), body["user"]["id"])
        reply(f"Marked done: {blocks.action_line(item)}")

    def _acknowledge_page(self, body: dict[str, Any], action: dict[str, Any], reply: Reply,
                          _context: BoltContext) -> None:
        self._acknowledge(body, action, reply)

    def _acknowledge(self, body: dict[str, Any], action: dict[str, Any], reply: Reply) -> Page:
        user = body["user"]["id"]
        page = self.s.paging.acknowledge(target_id(action), user)
        if page.acknowledged_by == user:
            reply(f"Acknowledged: you are on it for *{blocks.escape(page.service)}*.")
        else:
            reply(f"<@{page.acknowledged_by}> already acknowledged this page.")
        return page

    def _acknowledge_and_command(self, body: dict[str, Any], action: dict[str, Any],
                                 reply: Reply, _context: BoltContext) -> None:
        """Acknowledge the page and become incident commander if nobody is."""
        page = self._acknowledge(body, action, reply)
        user = body["user"]["id"]
        incident = self.s.ctx.incident_by_id(page.incident_id)
        if incident.holder(Role.IC.value) is None:
            self.s.declaration.assign_role(incident.id, Role.IC, user, user)
            reply(f"You are the incident commander of <#{incident.channel_id}>.")
        elif incident.holder(Role.IC.value) != user:
            reply(f"<@{incident.holder(Role.IC.value)}> already commands this incident.")

    def _suggest_severity(self, body: dict[str, Any], _action: dict[str, Any], _reply: Reply,
                          _context: BoltContext) -> None:
        """Suggest a severity in the open declare form from the decision-tree answers."""
        view = body.get("view") or {}
        ticked = set(choices(view_values(view), blocks.CRITERIA))
        answers = [f"q{i}" in ticked for i in range(len(DECISION_TREE))]
        suggested = suggest_severity(answers) if any(answers) else None
        updated = views.declare_modal(read_metadata(view),
                                       services=self.s.ctx.catalog.names,
                                       suggested=suggested)
        try:
            self.s.ctx.gateway.update_view(view.get("id", ""), updated, view.get("hash"))
        except SlackCallFailed as exc:
            log.info("Declare form not updated with a suggestion: %s", exc.error)
