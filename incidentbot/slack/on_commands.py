"""The `/incident` slash command: parse and answer at once (ack), then do the work (lazy)."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, BoltContext

from incidentbot.core import comms
from incidentbot.core.lifecycle import MAX_TITLE, Declaration
from incidentbot.core.resolution import Resolution
from incidentbot.core.status import Status
from incidentbot.jobs.runner import NO_WORK, RECEIVED_AT, urgent
from incidentbot.models import Incident
from incidentbot.services import Services
from incidentbot.services.context import UserFacingError
from incidentbot.slack import blocks, reports, views
from incidentbot.slack.answers import Answers, Reply, guarded
from incidentbot.slack.commands import (
    NEEDS_INCIDENT,
    AddAction,
    AdminJobs,
    AssignRole,
    Command,
    CommsDrafts,
    Declare,
    DraftPostmortem,
    Help,
    ListActions,
    ListOpen,
    Note,
    OnCall,
    PageService,
    PostUpdate,
    Reopen,
    Resolve,
    SetSeverity,
    SetStatus,
    ShowTimeline,
    Stats,
    UsageError,
    parse,
)
from incidentbot.slack.modals import Modals


def declared_message(incident: Incident, problems: list[str]) -> str:
    kind = "drill" if incident.is_drill else "incident"
    text = (f":rotating_light: {incident.severity} {kind} declared in <#{incident.channel_id}>"
            f" — you are the incident commander.")
    if problems:
        text += "\n:warning: Some steps failed: " + "; ".join(problems) + "."
    return text


class CommandListener:
    def __init__(self, services: Services, answers: Answers, modals: Modals) -> None:
        self.s = services
        self.answers = answers
        self.modals = modals

    def ack(self, ack: Ack, command: dict[str, Any], context: BoltContext) -> None:
        """Usage errors and help are answered here and nothing more happens."""
        try:
            parsed = parse(command.get("text", ""))
        except UsageError as exc:
            context[NO_WORK] = True
            ack(text=str(exc), blocks=reports.help_blocks(str(exc)), response_type="ephemeral")
            return
        if isinstance(parsed, Help):
            context[NO_WORK] = True
            ack(text="Incident commands", blocks=reports.help_blocks(),
                response_type="ephemeral")
        elif isinstance(parsed, Declare) and parsed.title:
            ack(text=f":hourglass_flowing_sand: Declaring “{blocks.escape(parsed.title[:200])}”…",
                response_type="ephemeral")
        else:
            ack()

    @urgent
    def run_command(self, command: dict[str, Any], context: BoltContext) -> None:
        parsed = parse(command.get("text", ""))
        reply = self.answers.responder(command.get("response_url", ""))
        guarded(reply, lambda: self._run(parsed, command, reply, context), context)

    def _run(self, parsed: Command, command: dict[str, Any], reply: Reply,
             context: BoltContext) -> None:
        user = command["user_id"]
        if isinstance(parsed, Declare):
            self._declare(parsed, command, reply, context)
        elif isinstance(parsed, ListOpen):
            incidents = self.s.declaration.open_incidents_for(user)
            self._respond(command, "Open incidents",
                          reports.incident_list(incidents, self.s.ctx.clock()))
        elif isinstance(parsed, Stats):
            self._respond(command, "Incident statistics",
                          reports.stats_blocks(self.s.closing.stats(parsed.days, user)))
        elif isinstance(parsed, OnCall):
            self._on_call(parsed, command)
        elif isinstance(parsed, AdminJobs):
            self._admin_jobs(parsed, command, reply)
        elif isinstance(parsed, NEEDS_INCIDENT):
            incident = self._incident_here(command["channel_id"],
                                           command.get("text", "").split()[0])
            self._run_in_incident(parsed, incident, command, reply, context)

    def _run_in_incident(self, parsed: Command, incident: Incident, command: dict[str, Any],
                         reply: Reply, context: BoltContext) -> None:
        user = command["user_id"]
        if isinstance(parsed, AssignRole):
            change = self.s.declaration.assign_role(incident.id, parsed.role, parsed.user_id, user)
            if not change.changed:
                reply(f"<@{parsed.user_id}> already is the {parsed.role.title}.")
        elif isinstance(parsed, SetSeverity):
            change = self.s.declaration.change_severity(incident.id, parsed.severity, user)
            if not change.changed:
                reply(f"The incident already is {parsed.severity.value}.")
        elif isinstance(parsed, SetStatus) and parsed.status is Status.RESOLVED:
            self.s.closing.resolve(incident.id, Resolution(summary=""), user)
        elif isinstance(parsed, SetStatus):
            change = self.s.declaration.change_status(incident.id, parsed.status, user)
            if not change.changed:
                reply(f"The incident already is {parsed.status.value}.")
        elif isinstance(parsed, PostUpdate):
            self.modals.open_update_form(incident, command["trigger_id"], reply,
                                          context.get(RECEIVED_AT))
        elif isinstance(parsed, Resolve):
            self.modals.open_resolve_form(incident, command["trigger_id"], reply, user,
                                           context.get(RECEIVED_AT))
        else:
            self._run_record_command(parsed, incident, command, reply)

    def _run_record_command(self, parsed: Command, incident: Incident,
                            command: dict[str, Any], reply: Reply) -> None:
        user = command["user_id"]
        if isinstance(parsed, Note):
            self.s.timeline.add_note(incident.id, parsed.text, user,
                                     request_key=f"note:{command.get('trigger_id', '')}")
            reply("Noted as a key event.")
        elif isinstance(parsed, ShowTimeline):
            incident, events = self.s.timeline.key_events(incident.id)
            self._respond(command, "Key events", reports.key_events_blocks(incident, events))
        elif isinstance(parsed, Reopen):
            self.s.closing.reopen(incident.id, user)
        elif isinstance(parsed, DraftPostmortem):
            record = self.s.closing.draft_postmortem(incident.id, user)
            reply(":memo: Postmortem draft uploaded to the channel." if record.file_id else
                  ":warning: The draft was saved but could not be uploaded; try again soon.")
        elif isinstance(parsed, AddAction):
            item = self.s.closing.add_action(
                incident.id, text=parsed.text, owner_id=parsed.owner_id, by=user,
                due=parsed.due, priority=parsed.priority,
                request_key=f"trigger:{command.get('trigger_id', '')}")
            reply(f"Added: {blocks.action_line(item)}")
        elif isinstance(parsed, PageService):
            self.s.paging.page(incident.id, parsed.service, user)
        elif isinstance(parsed, CommsDrafts):
            latest = self.s.updates.latest_update(incident.id)
            found = comms.drafts(incident, latest, self.s.ctx.clock())
            self._respond(command, "Communication drafts", reports.comms_blocks(incident, found))
        elif isinstance(parsed, ListActions):
            incident, items = self.s.closing.list_actions(incident.id)
            self._respond(command, "Action items", reports.actions_blocks(incident, items))

    def _declare(self, parsed: Declare, command: dict[str, Any], reply: Reply,
                 context: BoltContext) -> None:
        if not parsed.title:
            metadata = {"response_url": command.get("response_url", ""),
                        "channel_id": command.get("channel_id", ""), "drill": parsed.drill}
            view = views.declare_modal(metadata, services=self.s.ctx.catalog.names)
            self.answers.open_modal(command["trigger_id"], view, reply, context.get(RECEIVED_AT))
            return
        if len(parsed.title) > MAX_TITLE:
            reply(f"The title is {len(parsed.title)} characters; keep it to {MAX_TITLE}, or run "
                  "`/incident declare` alone to use the form.")
            return
        result = self.s.declaration.declare(Declaration(
            title=parsed.title, declared_by=command["user_id"],
            team_id=command.get("team_id", ""),
            request_key=f"trigger:{command.get('trigger_id', '')}", is_drill=parsed.drill,
        ))
        reply(declared_message(result.incident, result.problems))

    def _on_call(self, parsed: OnCall, command: dict[str, Any]) -> None:
        catalog = self.s.ctx.catalog
        services = [s for s in catalog.services
                    if not parsed.service or s.name.lower() == parsed.service.lower()]
        if not services:
            known = ", ".join(catalog.names) or "none configured (SERVICES_FILE)"
            raise UserFacingError(f"I don't know the service `{blocks.escape(parsed.service)}`;"
                                  f" services: {known}.")
        now = self.s.ctx.clock()
        rows = [(s.name, s.escalation_at(now)) for s in services]
        self._respond(command, "On call now", reports.oncall_blocks(rows))

    def _admin_jobs(self, parsed: AdminJobs, command: dict[str, Any], reply: Reply) -> None:
        if not self.s.ctx.is_admin(command["user_id"]):
            raise UserFacingError("Only the people in INCIDENT_ADMINS may look after jobs.")
        if parsed.retry is None:
            jobs, stats = self.s.jobs.overview()
            self._respond(command, "Jobs", reports.failed_jobs_blocks(jobs, stats))
        elif self.s.jobs.retry(parsed.retry):
            reply(f"Job #{parsed.retry} will run again shortly.")
        else:
            reply(f"There is no failed job #{parsed.retry}.")

    def _incident_here(self, channel_id: str, subcommand: str) -> Incident:
        incident = self.s.ctx.incident_for_channel(channel_id)
        if incident is None:
            raise UserFacingError(
                f"`/incident {subcommand}` works inside an incident channel: run it in the "
                "incident's channel (see `/incident list`)."
            )
        return incident

    def _respond(self, command: dict[str, Any], text: str, body: list[dict[str, Any]]) -> None:
        self.s.ctx.gateway.respond(command.get("response_url", ""), text, body)
