"""Modal views: pure functions from incident data to the forms the bot opens."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    CheckboxesElement,
    ContextBlock,
    DatePickerElement,
    InputBlock,
    MarkdownTextObject,
    NumberInputElement,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
    UserSelectElement,
)
from slack_sdk.models.views import View

from incidentbot.core.actions import PRIORITIES
from incidentbot.core.roles import Role
from incidentbot.core.severity import (
    DECISION_TREE,
    SEVERITY_INFO,
    WHEN_TO_DECLARE,
    Severity,
    decision_tree_hint,
)
from incidentbot.core.status import SETTABLE_STATUSES, Status, allowed_next
from incidentbot.models import Incident, StatusUpdate
from incidentbot.slack.blocks import (
    ACTION_TEXT,
    ACTION_VIEW,
    CRITERIA,
    CURRENT_ACTION,
    CUSTOMER_IMPACT,
    DECLARE_VIEW,
    DESCRIPTION,
    DUE,
    ETA,
    FOLLOW_UP,
    IMPACT,
    NEXT_UPDATE,
    OWNER,
    PRIORITY,
    PRIVATE,
    RESOLVE_VIEW,
    ROLE,
    ROLE_VIEW,
    ROOT_CAUSE,
    SERVICE,
    SEVERITY,
    SEVERITY_VIEW,
    STATUS,
    STATUS_VIEW,
    SUMMARY,
    TITLE,
    UPDATE_VIEW,
    USER,
    escape,
    truncate,
)


def _option(text: str, value: str, description: str | None = None) -> Option:
    return Option(text=PlainTextObject(text=text), value=value, description=description)


def _severity_options() -> list[Option]:
    return [
        _option(s.value, s.value, truncate(SEVERITY_INFO[s].definition, 75)) for s in Severity
    ]


def _modal(callback_id: str, title: str, blocks: list[Block], submit: str,
           metadata: dict[str, Any]) -> dict[str, Any]:
    view = View(
        type="modal", callback_id=callback_id, title=PlainTextObject(text=title),
        submit=PlainTextObject(text=submit), close=PlainTextObject(text="Cancel"),
        blocks=blocks, private_metadata=json.dumps(metadata),
    )
    return view.to_dict()


def declare_modal(metadata: dict[str, Any], title: str = "",
                  services: list[str] | None = None,
                  suggested: Severity | None = None) -> dict[str, Any]:
    """Title, severity (with the decision tree as help, and a suggestion from the answers
    ticked), description, service, options."""
    severity_options = _severity_options()
    initial = severity_options[list(Severity).index(suggested or Severity.SEV3)]
    when = " · ".join(WHEN_TO_DECLARE)
    tree = [_option(question, f"q{i}") for i, (question, _s) in enumerate(DECISION_TREE)]
    blocks: list[Block] = [
        ContextBlock(elements=[MarkdownTextObject(
            text=f"*Declare if any is true:* {when}")]),
        InputBlock(block_id=TITLE, label="Title", element=PlainTextInputElement(
            action_id=TITLE, max_length=200, initial_value=title or None,
            placeholder="What is broken, in a few words",
        )),
        InputBlock(block_id=CRITERIA, label="Severity decision tree (tick what is true)",
                   optional=True, dispatch_action=True,
                   element=CheckboxesElement(action_id=CRITERIA, options=tree)),
        InputBlock(
            # a new block id per suggestion, so Slack shows the suggested initial option
            block_id=f"{SEVERITY}_{initial.value}", label="Severity",
            hint=truncate(("Suggested from your answers. " if suggested else "")
                          + decision_tree_hint(), 2000),
            element=StaticSelectElement(
                action_id=SEVERITY, options=severity_options, initial_option=initial
            ),
        ),
        InputBlock(block_id=DESCRIPTION, label="Description", optional=True,
                   element=PlainTextInputElement(action_id=DESCRIPTION, multiline=True,
                                                 max_length=2900)),
        _service_input(services or []),
        InputBlock(block_id=PRIVATE, label="Options", optional=True,
                   element=CheckboxesElement(action_id=PRIVATE, options=[
                       _option("Private incident", "private",
                               "Private channel; no details outside it"),
                       _option("Drill", "drill",
                               "Practice: drill- channel, marked DRILL, never broadcast"),
                   ])),
    ]
    return _modal(DECLARE_VIEW, "Declare an incident", blocks, "Declare", metadata)


def _service_input(services: list[str]) -> InputBlock:
    """A select of the catalog's services, or free text when there is no catalog."""
    if not services:
        return InputBlock(block_id=SERVICE, label="Affected service", optional=True,
                          element=PlainTextInputElement(action_id=SERVICE, max_length=120))
    options = [_option(truncate(name, 75), name[:150]) for name in services[:100]]
    return InputBlock(block_id=SERVICE, label="Affected service", optional=True,
                      hint="Its runbook is bookmarked and its owners are invited",
                      element=StaticSelectElement(action_id=SERVICE, options=options))


def role_modal(incident: Incident, metadata: dict[str, Any]) -> dict[str, Any]:
    options = [_option(role.title, role.value) for role in Role]
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=f"*{escape(incident.title)}*")),
        InputBlock(block_id=ROLE, label="Role",
                   element=StaticSelectElement(action_id=ROLE, options=options,
                                               initial_option=options[0])),
        InputBlock(block_id=USER, label="Person", element=UserSelectElement(action_id=USER)),
    ]
    return _modal(ROLE_VIEW, "Assign a role", blocks, "Assign", metadata)


def severity_modal(incident: Incident, metadata: dict[str, Any]) -> dict[str, Any]:
    options = _severity_options()
    current = next(o for o in options if o.value == incident.severity)
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(
            text=f"Currently *{incident.severity}*.\n{decision_tree_hint()}")),
        InputBlock(block_id=SEVERITY, label="New severity",
                   element=StaticSelectElement(action_id=SEVERITY, options=options,
                                               initial_option=current)),
    ]
    return _modal(SEVERITY_VIEW, "Change severity", blocks, "Change", metadata)


def status_modal(incident: Incident, metadata: dict[str, Any]) -> dict[str, Any]:
    current = Status(incident.status)
    choices = [s for s in SETTABLE_STATUSES if s in allowed_next(current)]
    options = [_option(s.label, s.value) for s in choices or [current]]
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=f"Currently *{current.label}*.")),
        InputBlock(block_id=STATUS, label="New status",
                   element=StaticSelectElement(action_id=STATUS, options=options)),
    ]
    return _modal(STATUS_VIEW, "Change status", blocks, "Change", metadata)


def update_modal(incident: Incident, latest: StatusUpdate | None, default_minutes: float,
                 metadata: dict[str, Any]) -> dict[str, Any]:
    """Status, impact, current action, next update in N minutes, ETA."""
    current = Status(incident.status)
    choices = [s for s in SETTABLE_STATUSES if s.is_open]
    options = [_option(s.label, s.value) for s in choices]
    initial = next((o for o in options if o.value == current.value), options[0])
    minutes = f"{default_minutes:g}" if default_minutes > 0 else "30"
    blocks: list[Block] = [
        InputBlock(block_id=STATUS, label="Status", element=StaticSelectElement(
            action_id=STATUS, options=options, initial_option=initial)),
        InputBlock(block_id=IMPACT, label="Impact", hint="Who is affected, what is broken",
                   element=PlainTextInputElement(
                       action_id=IMPACT, multiline=True, max_length=1500,
                       initial_value=(latest.impact if latest else None) or None)),
        InputBlock(block_id=CURRENT_ACTION, label="Current action",
                   hint="What we are doing now",
                   element=PlainTextInputElement(action_id=CURRENT_ACTION, multiline=True,
                                                 max_length=1500)),
        InputBlock(block_id=NEXT_UPDATE, label="Next update in (minutes)",
                   element=NumberInputElement(action_id=NEXT_UPDATE, is_decimal_allowed=True,
                                              initial_value=minutes, max_value="1440")),
        InputBlock(block_id=ETA, label="ETA to resolution", optional=True,
                   element=PlainTextInputElement(action_id=ETA, max_length=200,
                                                 placeholder="e.g. 30 min, unknown")),
    ]
    return _modal(UPDATE_VIEW, "Post a status update", blocks, "Post", metadata)


def resolve_modal(incident: Incident, metadata: dict[str, Any]) -> dict[str, Any]:
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(
            text=f"Resolve *{escape(incident.title)}* ({incident.severity}). The all-clear goes "
                 "to the channel and the postmortem draft is generated.")),
        InputBlock(block_id=SUMMARY, label="Resolution summary", element=PlainTextInputElement(
            action_id=SUMMARY, multiline=True, max_length=2000,
            placeholder="What fixed it, in a sentence or two")),
        InputBlock(block_id=ROOT_CAUSE, label="Root cause, if known", optional=True,
                   element=PlainTextInputElement(action_id=ROOT_CAUSE, multiline=True,
                                                 max_length=2000)),
        InputBlock(block_id=CUSTOMER_IMPACT, label="Customer impact", optional=True,
                   element=PlainTextInputElement(action_id=CUSTOMER_IMPACT, multiline=True,
                                                 max_length=2000,
                                                 placeholder="Who was affected, for how long")),
        InputBlock(block_id=FOLLOW_UP, label="Follow-up", optional=True,
                   element=CheckboxesElement(action_id=FOLLOW_UP, options=[_option(
                       "Follow-up work is needed", "yes")])),
    ]
    return _modal(RESOLVE_VIEW, "Resolve incident", blocks, "Resolve", metadata)


def action_modal(incident: Incident, metadata: dict[str, Any], today: Any) -> dict[str, Any]:
    priorities = [_option(p, p) for p in PRIORITIES]
    blocks: list[Block] = [
        InputBlock(block_id=ACTION_TEXT, label="Action item", element=PlainTextInputElement(
            action_id=ACTION_TEXT, max_length=1000, placeholder="A concrete change to make")),
        InputBlock(block_id=OWNER, label="Owner", element=UserSelectElement(action_id=OWNER)),
        InputBlock(block_id=DUE, label="Due date", element=DatePickerElement(
            action_id=DUE, initial_date=today.isoformat())),
        InputBlock(block_id=PRIORITY, label="Priority", element=StaticSelectElement(
            action_id=PRIORITY, options=priorities, initial_option=priorities[2])),
    ]
    return _modal(ACTION_VIEW, "Add action item", blocks, "Add", metadata)
