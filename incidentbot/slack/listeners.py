"""Bolt listeners: parse the request, acknowledge within Slack's 3 s, call a workflow, answer.

Every path ends in an answer the person sees (ephemeral message, inline modal error or an
update in the channel); nothing here touches SQL or builds blocks by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from datetime import date
from typing import Any

from slack_bolt import Ack, App, BoltRequest, BoltResponse
from slack_bolt.middleware import Middleware
from sqlalchemy.exc import SQLAlchemyError

from incidentbot.core import comms
from incidentbot.core.actions import PRIORITIES, default_due
from incidentbot.core.errors import IncidentError
from incidentbot.core.lifecycle import MAX_TITLE, Declaration
from incidentbot.core.resolution import Resolution
from incidentbot.core.roles import Role
from incidentbot.core.severity import DECISION_TREE, Severity, suggest_severity
from incidentbot.core.status import Status
from incidentbot.core.updates import MAX_NEXT_UPDATE_MINUTES, UpdateRequest
from incidentbot.models import Incident
from incidentbot.slack import blocks
from incidentbot.slack.closing import ClosingWorkflows
from incidentbot.slack.commands import (
    NEEDS_INCIDENT,
    AddAction,
    AssignRole,
    Command,
    CommsDrafts,
    Declare,
    DraftPostmortem,
    Help,
    ListActions,
    ListOpen,
    Note,
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
from incidentbot.slack.gateway import SlackCallFailed
from incidentbot.slack.handoff import Handoff, request_signature
from incidentbot.slack.paging import PagingWorkflows
from incidentbot.slack.response import ResponseWorkflows
from incidentbot.slack.workflows import (
    IncidentWorkflows,
    UserFacingError,
    describe_slack_error,
)
from incidentbot.spool import SpoolBehind

log = logging.getLogger(__name__)

Reply = Callable[[str], None]


def register(
    app: App, flows: IncidentWorkflows, response: ResponseWorkflows, closing: ClosingWorkflows,
    paging: PagingWorkflows, work: Executor, *, replaying: bool = False,
) -> None:
    """Attach every listener to the Bolt app; `work` runs what follows each ack (a `Handoff`
    stores it for a worker). A worker's app is `replaying` requests already admitted.

    Bolt tries listeners in the order registered, and every listener it tries costs a
    matcher call that builds all of its injectable arguments (tens of µs). So there is one
    listener per kind of request, dispatching on the button's `action_id` or the form's
    `callback_id`, and the kinds a person waits on come first: the slash command, buttons,
    forms. Channel messages come after them: the busiest kind, but `admit` answers every
    message it stores without a listener, and the rest (the bot's own posts) wait on nobody.
    """
    listeners = Listeners(flows, response, closing, paging, work)
    if not replaying:
        app.middleware(Admission(listeners.admit))
    app.command("/incident")(listeners.on_command)
    buttons: dict[str, Callable[[Ack, dict[str, Any], dict[str, Any]], None]] = {
        blocks.POST_UPDATE: listeners.on_update_button,
        blocks.REMINDER_POST_UPDATE: listeners.on_update_button,
        blocks.REMINDER_SNOOZE: listeners.on_snooze,
        blocks.ASSIGN_ROLE: listeners.on_card_button,
        blocks.CHANGE_SEVERITY: listeners.on_card_button,
        blocks.CHANGE_STATUS: listeners.on_card_button,
        blocks.RESOLVE: listeners.on_resolve_button,
        blocks.ADD_ACTION: listeners.on_add_action_button,
        blocks.ACTION_DONE: listeners.on_action_done,
        blocks.PAGE_ACK: listeners.on_page_ack,
        blocks.CRITERIA: lambda ack, body, _action: listeners.on_criteria_ticked(ack, body),
    }
    forms: dict[str, Callable[[Ack, dict[str, Any], dict[str, Any]], None]] = {
        blocks.UPDATE_VIEW: listeners.on_update_submitted,
        blocks.DECLARE_VIEW: listeners.on_declare_submitted,
        blocks.ROLE_VIEW: listeners.on_role_submitted,
        blocks.SEVERITY_VIEW: listeners.on_severity_submitted,
        blocks.STATUS_VIEW: listeners.on_status_submitted,
        blocks.RESOLVE_VIEW: listeners.on_resolve_submitted,
        blocks.ACTION_VIEW: listeners.on_action_submitted,
    }

    @app.action(one_of(buttons))
    def on_button(ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        buttons[action["action_id"]](ack, body, action)

    @app.view(one_of(forms))
    def on_form(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        forms[view["callback_id"]](ack, body, view)

    app.event("message")(listeners.on_message)
    app.event(one_of(OTHER_EVENTS))(listeners.on_other_event)


OTHER_EVENTS = ("reaction_added", "reaction_removed", "member_joined_channel")


def one_of(names: Iterable[str]) -> re.Pattern[str]:
    """A Bolt constraint matching exactly these names."""
    return re.compile("^(?:" + "|".join(re.escape(name) for name in names) + ")$")


class Admission(Middleware):
    """`Listeners.admit` as a Bolt middleware object: Bolt calls it directly, without the
    argument injection it does for middleware functions (this runs on every request)."""

    def __init__(self, admit: Callable[[BoltRequest, Callable[[], Any]], Any]) -> None:
        self._admit = admit

    def process(self, *, req: BoltRequest, resp: BoltResponse,
                next: Callable[[], BoltResponse]) -> BoltResponse | None:
        return self._admit(req, next)


class Listeners:
    def __init__(
        self, flows: IncidentWorkflows, response: ResponseWorkflows, closing: ClosingWorkflows,
        paging: PagingWorkflows, work: Executor,
    ) -> None:
        self.flows = flows
        self.response = response
        self.closing = closing
        self.paging = paging
        self.gateway = flows.gateway
        self._work = work

    def _later(self, reply: Reply, action: Callable[[], object]) -> None:
        """Run the work that follows an ack on the work pool, so the listener thread is free
        at once: an ack never waits behind slow work, however much of it is queued."""
        self._work.submit(guarded, reply, action)

    # -- slash command -----------------------------------------------------------------

    def on_command(self, ack: Ack, command: dict[str, Any]) -> None:
        try:
            parsed = parse(command.get("text", ""))
        except UsageError as exc:
            ack(text=str(exc), blocks=blocks.help_blocks(str(exc)), response_type="ephemeral")
            return
        if isinstance(parsed, Help):
            ack(text="Incident commands", blocks=blocks.help_blocks(),
                response_type="ephemeral")
            return
        if isinstance(parsed, Declare) and parsed.title:
            ack(text=f":hourglass_flowing_sand: Declaring “{blocks.escape(parsed.title[:200])}”…",
                response_type="ephemeral")
        else:
            ack()
        reply = self._responder(command.get("response_url", ""))
        self._later(reply, lambda: self._run_command(parsed, command, reply))

    def _run_command(self, parsed: Command, command: dict[str, Any], reply: Reply) -> None:
        user, channel = command["user_id"], command["channel_id"]
        if isinstance(parsed, Declare):
            self._declare_from_command(parsed, command, reply)
            return
        if isinstance(parsed, ListOpen):
            incidents = self.flows.open_incidents_for(user)
            self._respond(command, "Open incidents",
                          blocks.incident_list(incidents, self.flows.clock()))
            return
        if isinstance(parsed, Stats):
            self._respond(command, "Incident statistics",
                          blocks.stats_blocks(self.closing.stats(parsed.days, user)))
            return
        if not isinstance(parsed, NEEDS_INCIDENT):
            raise AssertionError(f"unhandled command {parsed!r}")
        incident = self._incident_here(channel, command.get("text", "").split()[0])
        if isinstance(parsed, AssignRole):
            change = self.flows.assign_role(incident.id, parsed.role, parsed.user_id, user)
            if not change.changed:
                reply(f"<@{parsed.user_id}> already is the {parsed.role.title}.")
        elif isinstance(parsed, SetSeverity):
            change = self.flows.change_severity(incident.id, parsed.severity, user)
            if not change.changed:
                reply(f"The incident already is {parsed.severity.value}.")
        elif isinstance(parsed, SetStatus) and parsed.status is Status.RESOLVED:
            self.closing.resolve(incident.id, Resolution(summary=""), user)
        elif isinstance(parsed, SetStatus):
            change = self.flows.change_status(incident.id, parsed.status, user)
            if not change.changed:
                reply(f"The incident already is {parsed.status.value}.")
        elif isinstance(parsed, PostUpdate):
            self._open_update_form(incident, command["trigger_id"], reply)
        elif isinstance(parsed, Note):
            self.response.add_note(incident.id, parsed.text, user)
            reply("Noted as a key event.")
        elif isinstance(parsed, ShowTimeline):
            incident, events = self.response.key_events(incident.id)
            self._respond(command, "Key events", blocks.key_events_blocks(incident, events))
        else:
            self._run_closing_command(parsed, incident, command, reply)

    def _run_closing_command(
        self, parsed: Command, incident: Incident, command: dict[str, Any], reply: Reply
    ) -> None:
        user = command["user_id"]
        if isinstance(parsed, Resolve):
            self._open_resolve_form(incident, command["trigger_id"], reply, user)
        elif isinstance(parsed, Reopen):
            self.closing.reopen(incident.id, user)
        elif isinstance(parsed, DraftPostmortem):
            record = self.closing.draft_postmortem(incident.id, user)
            reply(":memo: Postmortem draft uploaded to the channel." if record.file_id else
                  ":warning: The draft was saved but could not be uploaded; try again soon.")
        elif isinstance(parsed, AddAction):
            item = self.closing.add_action(
                incident.id, text=parsed.text, owner_id=parsed.owner_id, by=user,
                due=parsed.due, priority=parsed.priority,
                request_key=f"trigger:{command.get('trigger_id', '')}")
            reply(f"Added: {blocks.action_line(item)}")
        elif isinstance(parsed, PageService):
            self.paging.page(incident.id, parsed.service, user)
        elif isinstance(parsed, CommsDrafts):
            latest = self.response.latest_update(incident.id)
            found = comms.drafts(incident, latest, self.flows.clock())
            self._respond(command, "Communication drafts", blocks.comms_blocks(incident, found))
        elif isinstance(parsed, ListActions):
            incident, items = self.closing.list_actions(incident.id)
            self._respond(command, "Action items", blocks.actions_blocks(incident, items))

    def _declare_from_command(
        self, parsed: Declare, command: dict[str, Any], reply: Reply
    ) -> None:
        user = command["user_id"]
        if not parsed.title:
            metadata = {"response_url": command.get("response_url", ""),
                        "channel_id": command.get("channel_id", ""), "drill": parsed.drill}
            view = blocks.declare_modal(metadata, services=self.flows.catalog.names)
            self._open_modal(command["trigger_id"], view, reply)
            return
        if len(parsed.title) > MAX_TITLE:
            reply(f"The title is {len(parsed.title)} characters; keep it to {MAX_TITLE}, or run "
                  "`/incident declare` alone to use the form.")
            return
        result = self.flows.declare(Declaration(
            title=parsed.title, declared_by=user, team_id=command.get("team_id", ""),
            request_key=f"trigger:{command.get('trigger_id', '')}", is_drill=parsed.drill,
        ))
        reply(declared_message(result.incident, result.problems))

    def _incident_here(self, channel_id: str, subcommand: str) -> Incident:
        incident = self.flows.incident_for_channel(channel_id)
        if incident is None:
            raise UserFacingError(
                f"`/incident {subcommand}` works inside an incident channel: run it in the "
                "incident's channel (see `/incident list`)."
            )
        return incident

    # -- buttons -----------------------------------------------------------------------

    def on_card_button(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "")
        reply = self._ephemeral(channel, user)

        def open_form() -> None:
            incident = self.flows.incident_by_id(int(action.get("value", "0")))
            metadata = {"incident_id": incident.id, "channel_id": incident.channel_id}
            builder = {
                blocks.ASSIGN_ROLE: blocks.role_modal,
                blocks.CHANGE_SEVERITY: blocks.severity_modal,
                blocks.CHANGE_STATUS: blocks.status_modal,
            }[action["action_id"]]
            self._open_modal(body["trigger_id"], builder(incident, metadata), reply)

        self._later(reply, open_form)

    def on_update_button(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        channel = (body.get("channel") or {}).get("id", "")
        reply = self._ephemeral(channel, body["user"]["id"])
        self._later(reply, lambda: self._open_update_form(
            self.flows.incident_by_id(int(action.get("value", "0"))), body["trigger_id"], reply))

    def on_snooze(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "")
        reply = self._ephemeral(channel, user)

        def snooze() -> None:
            due = self.response.snooze(int(action.get("value", "0")), user)
            if due is not None:
                reply(f"Snoozed: the next reminder is due {blocks.slack_date(due)}.")

        self._later(reply, snooze)

    def _open_update_form(self, incident: Incident, trigger_id: str, reply: Reply) -> None:
        if not Status(incident.status).is_open:
            reply(f"The incident is {incident.status}; updates are for open incidents.")
            return
        latest = self.response.latest_update(incident.id)
        view = blocks.update_modal(incident, latest, self.flows.interval(incident.severity),
                                   {"incident_id": incident.id, "channel_id": incident.channel_id})
        self._open_modal(trigger_id, view, reply)

    def on_resolve_button(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        reply = self._ephemeral((body.get("channel") or {}).get("id", ""), body["user"]["id"])
        self._later(reply, lambda: self._open_resolve_form(
            self.flows.incident_by_id(int(action.get("value", "0"))), body["trigger_id"], reply,
            body["user"]["id"]))

    def _open_resolve_form(
        self, incident: Incident, trigger_id: str, reply: Reply, user: str
    ) -> None:
        self.flows.authorize(incident, user, "resolve it")
        if not Status(incident.status).is_open:
            reply(f"This incident is already {incident.status}; use `/incident reopen` if it "
                  "came back.")
            return
        metadata = {"incident_id": incident.id, "channel_id": incident.channel_id}
        self._open_modal(trigger_id, blocks.resolve_modal(incident, metadata), reply)

    def on_add_action_button(
        self, ack: Ack, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        ack()
        reply = self._ephemeral((body.get("channel") or {}).get("id", ""), body["user"]["id"])

        def open_form() -> None:
            incident = self.flows.incident_by_id(int(action.get("value", "0")))
            metadata = {"incident_id": incident.id, "channel_id": incident.channel_id}
            today = self.flows.clock().date()
            self._open_modal(body["trigger_id"],
                             blocks.action_modal(incident, metadata, default_due(today)), reply)

        self._later(reply, open_form)

    def on_criteria_ticked(self, ack: Ack, body: dict[str, Any]) -> None:
        """Suggest a severity in the open declare form from the decision-tree answers."""
        ack()
        view = body.get("view") or {}
        ticked = set(choices(view_values(view), blocks.CRITERIA))
        answers = [f"q{i}" in ticked for i in range(len(DECISION_TREE))]
        suggested = suggest_severity(answers) if any(answers) else None
        updated = blocks.declare_modal(read_metadata(view), services=self.flows.catalog.names,
                                       suggested=suggested)

        def suggest() -> None:
            try:
                self.gateway.update_view(view.get("id", ""), updated, view.get("hash"))
            except SlackCallFailed as exc:
                log.info("Declare form not updated with a suggestion: %s", exc.error)

        self._later(lambda text: log.info("Severity suggestion failed: %s", text), suggest)

    def on_page_ack(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id", "") or user
        reply = self._ephemeral(channel, user)

        def acknowledge() -> None:
            page = self.paging.acknowledge(int(action.get("value", "0")), user)
            if page.acknowledged_by == user:
                reply(f"Acknowledged: you are on it for *{blocks.escape(page.service)}*.")
            else:
                reply(f"<@{page.acknowledged_by}> already acknowledged this page.")

        self._later(reply, acknowledge)

    def on_action_done(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        user = body["user"]["id"]
        reply = self._ephemeral((body.get("channel") or {}).get("id", ""), user)

        def complete() -> None:
            item = self.closing.complete_action(int(action.get("value", "0")), user)
            reply(f"Marked done: {blocks.action_line(item)}")

        self._later(reply, complete)

    # -- modals ------------------------------------------------------------------------

    def on_resolve_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view_values(view)
        summary = text(values, blocks.SUMMARY).strip()
        if not summary:
            ack(response_action="errors", errors={blocks.SUMMARY: "Say what fixed it."})
            return
        incident_id = read_metadata(view).get("incident_id")
        try:
            incident = self.flows.incident_by_id(int(incident_id or 0))
        except (UserFacingError, IncidentError) as exc:
            ack(response_action="errors", errors={blocks.SUMMARY: plain(str(exc))})
            return
        if not Status(incident.status).is_open:
            ack(response_action="errors", errors={
                blocks.SUMMARY: f"This incident is already {incident.status}."})
            return
        ack()
        request = Resolution(
            summary=summary, root_cause=text(values, blocks.ROOT_CAUSE),
            customer_impact=text(values, blocks.CUSTOMER_IMPACT),
            follow_up_needed="yes" in choices(values, blocks.FOLLOW_UP))
        self._submit_change(body, view, lambda incident_id, by: self.closing.resolve(
            incident_id, request, by))

    def on_action_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view_values(view)
        errors = self._action_form_errors(values)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        ack()
        due = date.fromisoformat(text(values, blocks.DUE))
        self._submit_change(body, view, lambda incident_id, by: self.closing.add_action(
            incident_id, text=text(values, blocks.ACTION_TEXT),
            owner_id=text(values, blocks.OWNER), by=by, due=due,
            priority=text(values, blocks.PRIORITY) or "P2",
            request_key=f"view:{view.get('id', '')}"))

    def _action_form_errors(self, values: dict[str, Any]) -> dict[str, str]:
        errors: dict[str, str] = {}
        if not text(values, blocks.ACTION_TEXT).strip():
            errors[blocks.ACTION_TEXT] = "Say what needs doing."
        owner = text(values, blocks.OWNER)
        if not owner:
            errors[blocks.OWNER] = "Pick an owner."
        else:
            try:
                self.flows.require_person(owner)
            except UserFacingError as exc:
                errors[blocks.OWNER] = plain(str(exc))
        try:
            due = date.fromisoformat(text(values, blocks.DUE))
        except ValueError:
            errors[blocks.DUE] = "Pick a due date."
        else:
            if due < self.flows.clock().date():
                errors[blocks.DUE] = "The due date is in the past."
        if (text(values, blocks.PRIORITY) or "P2") not in PRIORITIES:
            errors[blocks.PRIORITY] = "Pick a priority from P0 to P3."
        return errors

    def on_update_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view_values(view)
        errors = update_form_errors(values)
        if errors:
            ack(response_action="errors", errors=errors)
            return
        ack()
        request = UpdateRequest(
            author_id=body["user"]["id"], status=Status(text(values, blocks.STATUS)),
            impact=text(values, blocks.IMPACT),
            current_action=text(values, blocks.CURRENT_ACTION),
            eta=text(values, blocks.ETA),
            next_update_minutes=next_update_minutes(values),
            request_key=f"view:{view.get('id', '')}",
        )
        self._submit_change(body, view, lambda incident_id, _by: self.response.post_update(
            incident_id, request))

    def on_declare_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view_values(view)
        title = " ".join(text(values, blocks.TITLE).split())
        if not title:
            ack(response_action="errors", errors={blocks.TITLE: "Give the incident a title."})
            return
        if len(title) > MAX_TITLE:
            ack(response_action="errors",
                errors={blocks.TITLE: f"Keep the title to {MAX_TITLE} characters."})
            return
        severity = Severity.parse(text(values, blocks.SEVERITY))
        if severity is None:
            ack(response_action="errors",
                errors={block_of(view, blocks.SEVERITY): "Pick a severity."})
            return
        ack()
        metadata = read_metadata(view)
        user = body["user"]["id"]
        reply = self._notify(metadata, user)
        declaration = Declaration(
            title=title, declared_by=user, severity=severity,
            description=text(values, blocks.DESCRIPTION),
            service=text(values, blocks.SERVICE),
            is_private="private" in choices(values, blocks.PRIVATE),
            is_drill="drill" in choices(values, blocks.PRIVATE) or bool(metadata.get("drill")),
            team_id=(body.get("team") or {}).get("id", ""),
            request_key=f"view:{view.get('id', '')}",
        )

        def declare() -> None:
            result = self.flows.declare(declaration)
            reply(declared_message(result.incident, result.problems))

        self._later(reply, declare)

    def on_role_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view_values(view)
        role = Role.parse(text(values, blocks.ROLE))
        user_id = text(values, blocks.USER)
        if role is None:
            ack(response_action="errors", errors={blocks.ROLE: "Pick a role."})
            return
        if not user_id:
            ack(response_action="errors", errors={blocks.USER: "Pick a person."})
            return
        try:
            self.flows.require_person(user_id)
        except UserFacingError as exc:
            ack(response_action="errors", errors={blocks.USER: plain(str(exc))})
            return
        ack()
        self._submit_change(body, view, lambda incident_id, by: self.flows.assign_role(
            incident_id, role, user_id, by))

    def on_severity_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        severity = Severity.parse(text(view_values(view), blocks.SEVERITY))
        if severity is None:
            ack(response_action="errors", errors={blocks.SEVERITY: "Pick a severity."})
            return
        ack()
        self._submit_change(body, view, lambda incident_id, by: self.flows.change_severity(
            incident_id, severity, by))

    def on_status_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        status = Status.parse(text(view_values(view), blocks.STATUS))
        if status is None:
            ack(response_action="errors", errors={blocks.STATUS: "Pick a status."})
            return
        ack()
        if status is Status.RESOLVED:
            self._submit_change(body, view, lambda incident_id, by: self.closing.resolve(
                incident_id, Resolution(summary=""), by))
            return
        self._submit_change(body, view, lambda incident_id, by: self.flows.change_status(
            incident_id, status, by))

    def _submit_change(
        self, body: dict[str, Any], view: dict[str, Any], change: Callable[[int, str], object]
    ) -> None:
        metadata = read_metadata(view)
        user = body["user"]["id"]
        reply = self._notify(metadata, user)
        incident_id = metadata.get("incident_id")
        if not isinstance(incident_id, int):
            reply("That form has lost track of its incident; open it again from the card.")
            return
        self._later(reply, lambda: change(incident_id, user))

    # -- events ------------------------------------------------------------------------

    def admit(self, request: BoltRequest, next_: Callable[[], Any]) -> Any:
        """Refuse replays, and store timeline events before Slack gets its answer.

        Bolt has checked the signature and that its timestamp is under 5 minutes old; a
        correctly signed request captured and sent again within that window is refused here
        (401). A channel message is stored before the answer, once: its timeline row is
        unique on the message's ts, so it needs no ledger row (on SQLite with a worker
        process it is spooled, see `incidentbot.spool`); a second delivery stores nothing
        and is answered 200 if it is Slack's retry (`X-Slack-Retry-Num`), 401 otherwise.
        A stored message is answered here, without Bolt matching and running a listener
        that would only acknowledge it (a busy channel's cost, per message). Other
        requests are recorded in the replay ledger (Slack signs each of its retries anew, so
        they pass); with a `Handoff`, commands, clicks and forms are recorded after their
        listener ran, with the request when it has work. If the database is down, Slack gets
        a 503 and delivers the event again later, so nothing is lost. Socket Mode requests
        carry no signature and skip the ledger.
        """
        body = request.body
        event = body.get("event") if body.get("type") == "event_callback" else None
        headers = request.headers
        signature = request_signature(request)
        if event is None and isinstance(self._work, Handoff):
            return next_()  # stored, or remembered, by `Handoff.dispatch` after the listener
        try:
            message = self.response.message_row(event) if isinstance(event, dict) else None
            if message is not None:
                fresh = self.response.store_message(message) or "x-slack-retry-num" in headers
            else:
                fresh = self._remember(signature)
            if not fresh and signature:
                log.warning("Refused a replayed request")
                return BoltResponse(status=401, body="")
            if message is not None:
                return BoltResponse(status=200, body="")  # stored: nothing more to do
            if isinstance(event, dict):
                self._capture_change(event, signature)
        except (SQLAlchemyError, SpoolBehind) as exc:
            log.error("Timeline store unavailable; Slack will redeliver: %s",
                      type(exc).__name__)
            return BoltResponse(status=503, body="timeline store unavailable")
        return next_()

    def _remember(self, signature: str) -> bool:
        """False for a replay (Socket Mode requests, unsigned, are never one)."""
        if not signature:
            return True
        try:
            return self.flows.remember_request(signature)
        except SQLAlchemyError as exc:
            log.warning("Replay ledger unavailable (%s); relying on signatures alone",
                        type(exc).__name__)
            return True

    def _capture_change(self, event: dict[str, Any], signature: str) -> None:
        """Edits, deletions and key-event reactions; on failure the request is forgotten by
        the ledger, so that the same request delivered again is accepted."""
        try:
            self.response.capture_change(event)
        except (SQLAlchemyError, SpoolBehind):
            if signature:
                with contextlib.suppress(SQLAlchemyError):
                    self.flows.forget_request(signature)
            raise

    def on_message(self, ack: Ack) -> None:
        """Messages `admit` has not answered (not stored: a bot's, or outside incident
        channels): only acknowledged."""
        ack()

    def on_other_event(self, ack: Ack) -> None:
        ack()

    # -- answering ---------------------------------------------------------------------

    def _open_modal(self, trigger_id: str, view: dict[str, Any], reply: Reply) -> None:
        try:
            self.gateway.open_view(trigger_id, view)
        except SlackCallFailed as exc:
            if exc.error in ("expired_trigger_id", "invalid_trigger_id"):
                reply("Slack took too long to open the form; please try again.")
            else:
                reply(f"I could not open the form: {describe_slack_error(exc)}.")

    def _responder(self, response_url: str) -> Reply:
        return lambda text: self._send(response_url, text)

    def _send(self, response_url: str, text: str) -> None:
        if response_url:
            self.gateway.respond(response_url, text)

    def _respond(self, command: dict[str, Any], text: str, body: list[dict[str, Any]]) -> None:
        self.gateway.respond(command.get("response_url", ""), text, body)

    def _ephemeral(self, channel: str, user: str) -> Reply:
        def send(text: str) -> None:
            try:
                self.gateway.post_ephemeral(channel, user, text)
            except SlackCallFailed:
                self._dm(user, text)
        return send

    def _dm(self, user: str, text: str) -> None:
        try:
            self.gateway.post_message(user, text)
        except SlackCallFailed:
            log.error("Could not tell %s: %s", user, text)

    def _notify(self, metadata: dict[str, Any], user: str) -> Reply:
        """Answer a modal submitter: via the command's response_url, in-channel, or by DM."""
        response_url = metadata.get("response_url")
        channel = metadata.get("channel_id")

        def send(text: str) -> None:
            if isinstance(response_url, str) and response_url and \
                    self.gateway.respond(response_url, text):
                return
            if isinstance(channel, str) and channel:
                self._ephemeral(channel, user)(text)
            else:
                self._dm(user, text)
        return send


def guarded(reply: Reply, action: Callable[[], object]) -> None:
    """Run a workflow; whatever goes wrong, the person gets a clear message, never a trace."""
    try:
        action()
    except (UserFacingError, IncidentError) as exc:
        reply(str(exc))
    except SlackCallFailed as exc:
        log.error("Slack call failed: %s", exc)
        reply(f"Something went wrong talking to Slack: {describe_slack_error(exc)}.")
    except Exception:
        log.exception("Unexpected error")
        reply(":warning: Something went wrong on my side and it has been logged. "
              "Nothing you asked for was lost; please try again.")


def declared_message(incident: Incident, problems: list[str]) -> str:
    kind = "drill" if incident.is_drill else "incident"
    text = (f":rotating_light: {incident.severity} {kind} declared in <#{incident.channel_id}>"
            f" — you are the incident commander.")
    if problems:
        text += "\n:warning: Some steps failed: " + "; ".join(problems) + "."
    return text


def read_metadata(view: dict[str, Any]) -> dict[str, Any]:
    raw = view.get("private_metadata")
    if not isinstance(raw, str | bytes):
        return {}
    try:
        metadata = json.loads(raw or "{}")
    except ValueError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def view_values(view: dict[str, Any]) -> dict[str, Any]:
    """Flatten `view.state.values` to {action_id: value} for the element types we use."""
    flat: dict[str, Any] = {}
    state = view.get("state")
    blocks_state = state.get("values") if isinstance(state, dict) else None
    for block in (blocks_state or {}).values() if isinstance(blocks_state, dict) else ():
        for action_id, element in (block.items() if isinstance(block, dict) else ()):
            flat[str(action_id)] = element_value(element) if isinstance(element, dict) else None
    return flat


def text(values: dict[str, Any], action_id: str) -> str:
    """A form field's text ("" when missing or not text, whatever a payload claims)."""
    value = values.get(action_id)
    return value if isinstance(value, str) else ""


def choices(values: dict[str, Any], action_id: str) -> list[str]:
    """A multi-choice field's selected values (empty when missing or malformed)."""
    value = values.get(action_id)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def block_of(view: dict[str, Any], action_id: str) -> str:
    """The block id holding an input element (modal errors are keyed by block id)."""
    for block_id, block in ((view.get("state") or {}).get("values") or {}).items():
        if action_id in (block or {}):
            return str(block_id)
    return action_id


def element_value(element: dict[str, Any]) -> Any:
    kind = element.get("type")
    if kind == "static_select":
        option = element.get("selected_option")
        return option.get("value") if isinstance(option, dict) else None
    if kind == "users_select":
        return element.get("selected_user")
    if kind == "datepicker":
        return element.get("selected_date")
    if kind == "checkboxes":
        options = element.get("selected_options")
        return [o.get("value") for o in options if isinstance(o, dict)] \
            if isinstance(options, list) else []
    return element.get("value")


def update_form_errors(values: dict[str, Any]) -> dict[str, str]:
    """Inline errors for the status-update form (empty when it is valid)."""
    errors: dict[str, str] = {}
    if Status.parse(text(values, blocks.STATUS)) is None:
        errors[blocks.STATUS] = "Pick a status."
    if not text(values, blocks.IMPACT).strip():
        errors[blocks.IMPACT] = "Say who is affected and what is broken."
    if not text(values, blocks.CURRENT_ACTION).strip():
        errors[blocks.CURRENT_ACTION] = "Say what the team is doing now."
    if next_update_minutes(values) is None:
        errors[blocks.NEXT_UPDATE] = (
            f"Give the minutes until the next update (more than 0, at most "
            f"{MAX_NEXT_UPDATE_MINUTES}).")
    return errors


def next_update_minutes(values: dict[str, Any]) -> float | None:
    """The form's next-update delay in minutes, or None when it is not a usable number."""
    try:
        minutes = float(text(values, blocks.NEXT_UPDATE))
    except (TypeError, ValueError):
        return None
    return minutes if 0 < minutes <= MAX_NEXT_UPDATE_MINUTES else None


def plain(text: str) -> str:
    """Modal error text is plain: drop mrkdwn user links to bare IDs."""
    return text.replace("<@", "").replace(">", "")
