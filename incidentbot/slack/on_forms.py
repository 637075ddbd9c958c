"""Modal submissions: inline errors at once (ack), then the change (lazy).

Each form is read by one method that returns its inline errors and the work it asks for;
the ack answers the errors, the lazy part reads the form again and does the work. A form
that passed at the ack but not when its work runs (an incident closed meanwhile) is told.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from slack_bolt import Ack, BoltContext

from incidentbot.core.actions import PRIORITIES
from incidentbot.core.errors import IncidentError
from incidentbot.core.lifecycle import MAX_TITLE, Declaration
from incidentbot.core.resolution import Resolution
from incidentbot.core.roles import Role
from incidentbot.core.severity import Severity
from incidentbot.core.status import Status
from incidentbot.core.updates import UpdateRequest
from incidentbot.jobs.runner import NO_WORK
from incidentbot.services import Services
from incidentbot.services.context import UserFacingError
from incidentbot.slack import blocks
from incidentbot.slack.answers import Answers, Reply, guarded
from incidentbot.slack.forms import (
    block_of,
    choices,
    next_update_minutes,
    plain,
    read_metadata,
    text,
    update_form_errors,
    view_values,
)
from incidentbot.slack.on_commands import declared_message

Work = Callable[[str, Reply], object]  # (submitter, reply)
Reading = tuple[dict[str, str], Work | None]
Errors = dict[str, str]


def refused(errors: Errors) -> Reading:
    return errors, None


class FormListener:
    def __init__(self, services: Services, answers: Answers) -> None:
        self.s = services
        self.answers = answers
        self.forms: dict[str, Callable[[dict[str, Any]], Reading]] = {
            blocks.UPDATE_VIEW: self._update,
            blocks.DECLARE_VIEW: self._declare,
            blocks.ROLE_VIEW: self._role,
            blocks.SEVERITY_VIEW: self._severity,
            blocks.STATUS_VIEW: self._status,
            blocks.RESOLVE_VIEW: self._resolve,
            blocks.ACTION_VIEW: self._action,
        }

    def ack(self, ack: Ack, view: dict[str, Any], context: BoltContext) -> None:
        errors, _ = self.forms[view["callback_id"]](view)
        if errors:
            context[NO_WORK] = True
            ack(response_action="errors", errors=errors)
        else:
            ack()

    def run_submission(self, body: dict[str, Any], view: dict[str, Any],
                       context: BoltContext) -> None:
        user = body["user"]["id"]
        reply = self.answers.notify(read_metadata(view), user)

        def apply() -> None:
            errors, work = self.forms[view["callback_id"]](view)
            if errors or work is None:
                reasons = "; ".join(plain(reason) for reason in errors.values())
                reply(f":warning: Your form was received but could not be applied: {reasons}. "
                      "Please open it again.")
                return
            work(user, reply)

        guarded(reply, apply, context)

    # -- one method per form -------------------------------------------------------------

    def _update(self, view: dict[str, Any]) -> Reading:
        values = view_values(view)
        errors = update_form_errors(values)
        if errors:
            return refused(errors)
        minutes = next_update_minutes(values)

        def post(user: str, _reply: Reply) -> None:
            request = UpdateRequest(
                author_id=user, status=Status(text(values, blocks.STATUS)),
                impact=text(values, blocks.IMPACT),
                current_action=text(values, blocks.CURRENT_ACTION),
                eta=text(values, blocks.ETA), next_update_minutes=minutes,
                request_key=f"view:{view.get('id', '')}")
            self.s.updates.post_update(self._incident_id(view), request)
        return {}, post

    def _declare(self, view: dict[str, Any]) -> Reading:
        values = view_values(view)
        title = " ".join(text(values, blocks.TITLE).split())
        if not title:
            return refused({blocks.TITLE: "Give the incident a title."})
        if len(title) > MAX_TITLE:
            return refused({blocks.TITLE: f"Keep the title to {MAX_TITLE} characters."})
        severity = Severity.parse(text(values, blocks.SEVERITY))
        if severity is None:
            return refused({block_of(view, blocks.SEVERITY): "Pick a severity."})
        metadata = read_metadata(view)
        ticked = choices(values, blocks.PRIVATE)

        def declare(user: str, reply: Reply) -> None:
            result = self.s.declaration.declare(Declaration(
                title=title, declared_by=user, severity=severity,
                description=text(values, blocks.DESCRIPTION),
                service=text(values, blocks.SERVICE), is_private="private" in ticked,
                is_drill="drill" in ticked or bool(metadata.get("drill")),
                team_id=str(view.get("team_id") or ""),
                request_key=f"view:{view.get('id', '')}"))
            reply(declared_message(result.incident, result.problems))
        return {}, declare

    def _role(self, view: dict[str, Any]) -> Reading:
        values = view_values(view)
        role = Role.parse(text(values, blocks.ROLE))
        person = text(values, blocks.USER)
        if role is None:
            return refused({blocks.ROLE: "Pick a role."})
        if not person:
            return refused({blocks.USER: "Pick a person."})
        try:
            self.s.ctx.require_person(person)
        except UserFacingError as exc:
            return refused({blocks.USER: plain(str(exc))})
        return {}, lambda user, _reply: self.s.declaration.assign_role(
            self._incident_id(view), role, person, user)

    def _severity(self, view: dict[str, Any]) -> Reading:
        severity = Severity.parse(text(view_values(view), blocks.SEVERITY))
        if severity is None:
            return refused({blocks.SEVERITY: "Pick a severity."})
        return {}, lambda user, _reply: self.s.declaration.change_severity(
            self._incident_id(view), severity, user)

    def _status(self, view: dict[str, Any]) -> Reading:
        status = Status.parse(text(view_values(view), blocks.STATUS))
        if status is None:
            return refused({blocks.STATUS: "Pick a status."})
        if status is Status.RESOLVED:
            return {}, lambda user, _reply: self.s.closing.resolve(
                self._incident_id(view), Resolution(summary=""), user)
        return {}, lambda user, _reply: self.s.declaration.change_status(
            self._incident_id(view), status, user)

    def _resolve(self, view: dict[str, Any]) -> Reading:
        values = view_values(view)
        summary = text(values, blocks.SUMMARY).strip()
        if not summary:
            return refused({blocks.SUMMARY: "Say what fixed it."})
        try:
            incident = self.s.ctx.incident_by_id(self._incident_id(view))
        except (UserFacingError, IncidentError) as exc:
            return refused({blocks.SUMMARY: plain(str(exc))})
        if not Status(incident.status).is_open:
            return refused({blocks.SUMMARY: f"This incident is already {incident.status}."})
        resolution = Resolution(
            summary=summary, root_cause=text(values, blocks.ROOT_CAUSE),
            customer_impact=text(values, blocks.CUSTOMER_IMPACT),
            follow_up_needed="yes" in choices(values, blocks.FOLLOW_UP))
        return {}, lambda user, _reply: self.s.closing.resolve(incident.id, resolution, user)

    def _action(self, view: dict[str, Any]) -> Reading:
        values = view_values(view)
        errors = self._action_errors(values)
        if errors:
            return refused(errors)
        return {}, lambda user, _reply: self.s.closing.add_action(
            self._incident_id(view), text=text(values, blocks.ACTION_TEXT),
            owner_id=text(values, blocks.OWNER), by=user,
            due=date.fromisoformat(text(values, blocks.DUE)),
            priority=text(values, blocks.PRIORITY) or "P2",
            request_key=f"view:{view.get('id', '')}")

    def _action_errors(self, values: dict[str, Any]) -> Errors:
        errors: Errors = {}
        if not text(values, blocks.ACTION_TEXT).strip():
            errors[blocks.ACTION_TEXT] = "Say what needs doing."
        owner = text(values, blocks.OWNER)
        if not owner:
            errors[blocks.OWNER] = "Pick an owner."
        else:
            try:
                self.s.ctx.require_person(owner)
            except UserFacingError as exc:
                errors[blocks.OWNER] = plain(str(exc))
        try:
            due = date.fromisoformat(text(values, blocks.DUE))
        except ValueError:
            errors[blocks.DUE] = "Pick a due date."
        else:
            if due < self.s.ctx.clock().date():
                errors[blocks.DUE] = "The due date is in the past."
        if (text(values, blocks.PRIORITY) or "P2") not in PRIORITIES:
            errors[blocks.PRIORITY] = "Pick a priority from P0 to P3."
        return errors

    @staticmethod
    def _incident_id(view: dict[str, Any]) -> int:
        incident_id = read_metadata(view).get("incident_id")
        if not isinstance(incident_id, int):
            raise UserFacingError("That form has lost track of its incident; open it again "
                                  "from the card.")
        return incident_id
