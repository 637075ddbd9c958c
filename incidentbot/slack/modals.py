"""Opening the incident's forms (modals) from a command or a button."""

from __future__ import annotations

from incidentbot.core.actions import default_due
from incidentbot.core.status import Status
from incidentbot.models import Incident
from incidentbot.services import Services
from incidentbot.slack import blocks, views
from incidentbot.slack.answers import Answers, Reply

CARD_FORMS = {
    blocks.ASSIGN_ROLE: views.role_modal,
    blocks.CHANGE_SEVERITY: views.severity_modal,
    blocks.CHANGE_STATUS: views.status_modal,
}


class Modals:
    def __init__(self, services: Services, answers: Answers) -> None:
        self.s = services
        self.answers = answers

    def open_update_form(self, incident: Incident, trigger_id: str, reply: Reply,
                         received_at: float | None) -> None:
        if not Status(incident.status).is_open:
            reply(f"The incident is {incident.status}; updates are for open incidents.")
            return
        latest = self.s.updates.latest_update(incident.id)
        view = views.update_modal(incident, latest, self.s.ctx.interval(incident.severity),
                                   _metadata(incident))
        self.answers.open_modal(trigger_id, view, reply, received_at)

    def open_resolve_form(self, incident: Incident, trigger_id: str, reply: Reply, user: str,
                          received_at: float | None) -> None:
        self.s.ctx.authorize(incident, user, "resolve it")
        if not Status(incident.status).is_open:
            reply(f"This incident is already {incident.status}; use `/incident reopen` if it "
                  "came back.")
            return
        self.answers.open_modal(trigger_id, views.resolve_modal(incident, _metadata(incident)),
                                reply, received_at)

    def open_card_form(self, action_id: str, incident: Incident, trigger_id: str, reply: Reply,
                       received_at: float | None) -> None:
        view = CARD_FORMS[action_id](incident, _metadata(incident))
        self.answers.open_modal(trigger_id, view, reply, received_at)

    def open_action_form(self, incident: Incident, trigger_id: str, reply: Reply,
                         received_at: float | None) -> None:
        today = self.s.ctx.clock().date()
        view = views.action_modal(incident, _metadata(incident), default_due(today))
        self.answers.open_modal(trigger_id, view, reply, received_at)


def _metadata(incident: Incident) -> dict[str, object]:
    return {"incident_id": incident.id, "channel_id": incident.channel_id}
