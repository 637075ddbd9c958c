"""Block Kit builders: pure functions from incident data to blocks and views.

Everything a person typed is escaped before it goes into `mrkdwn`, so nobody can make the
bot ping `@channel` or show a disguised link.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    CheckboxesElement,
    ContextBlock,
    DatePickerElement,
    DividerBlock,
    HeaderBlock,
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
from incidentbot.core.metrics import PeriodStats, durations, format_duration
from incidentbot.core.roles import Role
from incidentbot.core.severity import (
    DECISION_TREE,
    SEVERITY_INFO,
    WHEN_TO_DECLARE,
    Severity,
    decision_tree_hint,
)
from incidentbot.core.status import SETTABLE_STATUSES, Status, allowed_next
from incidentbot.models import ActionItem, Incident, StatusUpdate, TimelineEvent

# Action ids of buttons and callback ids of modals; the listeners match on these.
ASSIGN_ROLE = "card_assign_role"
CHANGE_SEVERITY = "card_change_severity"
CHANGE_STATUS = "card_change_status"
POST_UPDATE = "card_post_update"
REMINDER_POST_UPDATE = "reminder_post_update"
REMINDER_SNOOZE = "reminder_snooze"
UPDATE_VIEW = "post_update"
RESOLVE = "card_resolve"
ADD_ACTION = "add_action_item"
ACTION_DONE = "action_item_done"
RESOLVE_VIEW = "resolve_incident"
ACTION_VIEW = "add_action_item_form"
DECLARE_VIEW = "declare_incident"
ROLE_VIEW = "assign_role"
SEVERITY_VIEW = "change_severity"
STATUS_VIEW = "change_status"

# Input block ids (each holds one element whose action_id is the same string).
TITLE = "title"
SEVERITY = "severity"
DESCRIPTION = "description"
SERVICE = "service"
PRIVATE = "private"
ROLE = "role"
USER = "user"
STATUS = "status"
IMPACT = "impact"
CURRENT_ACTION = "current_action"
NEXT_UPDATE = "next_update"
ETA = "eta"
SUMMARY = "summary"
ROOT_CAUSE = "root_cause"
CUSTOMER_IMPACT = "customer_impact"
FOLLOW_UP = "follow_up"
ACTION_TEXT = "action_text"
OWNER = "owner"
DUE = "due"
PRIORITY = "priority"

SEVERITY_EMOJI = {
    Severity.SEV1: ":red_circle:",
    Severity.SEV2: ":large_orange_circle:",
    Severity.SEV3: ":large_yellow_circle:",
    Severity.SEV4: ":large_blue_circle:",
}
SECTION_LIMIT = 3000
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


def escape(text: str) -> str:
    """Escape Slack's control characters so user text renders literally in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_date(moment: datetime) -> str:
    """A timestamp Slack shows in each reader's own time zone, with a UTC fallback."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def mention(user_id: str | None) -> str:
    """A user mention, or the plain name of a non-person declarer such as Alertmanager."""
    if not user_id:
        return "_unassigned_"
    return f"<@{user_id}>" if USER_ID.match(user_id) else escape(user_id)


def _blocks(*blocks: Block) -> list[dict[str, Any]]:
    return [block.to_dict() for block in blocks]


def _severity_line(severity: Severity) -> str:
    return f"{SEVERITY_EMOJI[severity]} *{severity.value}* · {SEVERITY_INFO[severity].definition}"


def card_text(incident: Incident) -> str:
    """The card's notification text (also what screen readers and push notifications show)."""
    drill = "DRILL · " if incident.is_drill else ""
    return (f"{drill}{incident.severity} · {Status(incident.status).label} · "
            f"{escape(incident.title)}")


def incident_card(
    incident: Incident, latest: StatusUpdate | None = None
) -> list[dict[str, Any]]:
    """The pinned, always-current incident card."""
    severity = Severity(incident.severity)
    roles = incident.current_roles()
    role_lines = "\n".join(f"*{role.title}:* {mention(roles.get(role.value))}" for role in Role)
    marks = ("🔒 " if incident.is_private else "") + ("[DRILL] " if incident.is_drill else "")
    header = truncate(f"{marks}{incident.title}", 150)
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=header, emoji=True)),
        SectionBlock(fields=[
            MarkdownTextObject(text=f"*Severity*\n{_severity_line(severity)}"),
            MarkdownTextObject(text=f"*Status*\n{Status(incident.status).label}"),
            MarkdownTextObject(text=f"*Incident Commander*\n{mention(roles.get(Role.IC.value))}"),
            MarkdownTextObject(text=f"*Started*\n{slack_date(incident.declared_at)}"),
        ]),
        SectionBlock(text=MarkdownTextObject(text=f"*Roles*\n{role_lines}")),
    ]
    if incident.description:
        text = truncate(f"*Description*\n{escape(incident.description)}", SECTION_LIMIT)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    if latest is not None:
        when, who = slack_date(latest.posted_at), mention(latest.author_id)
        text = truncate(f"*Latest update* ({when}, {who})\n{_update_body(latest)}",
                        SECTION_LIMIT)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    context = [f"Declared by {mention(incident.declared_by)}", f"Incident #{incident.id}"]
    if incident.service:
        context.insert(0, f"Service: {escape(incident.service)}")
    if incident.next_update_due_at and Status(incident.status).is_open:
        context.append(f"Next update due {slack_date(incident.next_update_due_at)}")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=" · ".join(context))]))
    if Status(incident.status) is not Status.CLOSED:
        blocks.append(card_actions(incident))
    return _blocks(*blocks)


def card_actions(incident: Incident) -> ActionsBlock:
    value = str(incident.id)
    if not Status(incident.status).is_open:
        return ActionsBlock(block_id="card_actions", elements=[
            ButtonElement(text="Add action item", action_id=ADD_ACTION, value=value),
            ButtonElement(text="Assign role", action_id=ASSIGN_ROLE, value=value),
        ])
    return ActionsBlock(block_id="card_actions", elements=[
        ButtonElement(text="Post update", action_id=POST_UPDATE, value=value, style="primary"),
        ButtonElement(text="Assign role", action_id=ASSIGN_ROLE, value=value),
        ButtonElement(text="Change severity", action_id=CHANGE_SEVERITY, value=value),
        ButtonElement(text="Change status", action_id=CHANGE_STATUS, value=value),
        ButtonElement(text="Resolve", action_id=RESOLVE, value=value, style="danger"),
    ])


def topic(incident: Incident) -> str:
    """The channel topic: severity · status · IC."""
    ic = incident.holder(Role.IC.value)
    drill = "DRILL · " if incident.is_drill else ""
    return f"{drill}{incident.severity} · {Status(incident.status).label} · IC: {mention(ic)}"


def declared_announcement(incident: Incident) -> str:
    ic = incident.holder(Role.IC.value)
    lead = (f"{mention(ic)} is the incident commander." if ic else
            f"Declared by {mention(incident.declared_by)}; nobody is the incident commander "
            "yet: take it with `/incident role ic @you` or the card's Assign role button.")
    return (
        f":rotating_light: *{incident.severity} incident declared:* {escape(incident.title)}\n"
        f"{lead} Use the pinned card or `/incident help` to run the response."
    )


def handoff_text(old: str | None, new: str) -> str:
    if old:
        return (f":handshake: IC handoff: {mention(old)} → {mention(new)}. "
                f"{mention(new)} is now the incident commander.")
    return f"{mention(new)} is now the incident commander."


def role_text(role: Role, user_id: str, previous: str | None) -> str:
    if role is Role.IC:
        return handoff_text(previous, user_id)
    relieved = f" (taking over from {mention(previous)})" if previous else ""
    return f":bust_in_silhouette: {mention(user_id)} is now the {role.title}{relieved}."


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


CRITERIA = "criteria"


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


HELP_LINES = (
    ("declare [title]", "declare an incident (no title opens the form)"),
    ("declare --drill [title]", "declare a practice incident (drill- channel, never broadcast)"),
    ("role ic|scribe|comms|tech|ops|planning @person", "assign a role; `ic` hands off command"),
    ("severity SEV1|SEV2|SEV3|SEV4", "change the severity"),
    ("status investigating|identified|mitigated|resolved", "move the incident along"),
    ("update", "post a status update (resets the reminder clock)"),
    ("note <text>", "add a key event to the timeline"),
    ("timeline", "the key events so far"),
    ("resolve", "resolve: all-clear, reminders stop, postmortem drafted"),
    ("reopen", "undo a mistaken resolve"),
    ("postmortem", "(re)generate the postmortem draft"),
    ("action <text> @owner [due YYYY-MM-DD] [P0-P3]", "add an action item (due in 30 days)"),
    ("actions", "the action items, with Mark done buttons"),
    ("page [service]", "page the service's on-call: primary, secondary, then manager"),
    ("comms", "drafts: internal, executive, status page, customer email"),
    ("stats [days]", "MTTA, MTTM, MTTR and counts by severity (default 30 days)"),
    ("list", "open incidents with severity, status, IC and age"),
    ("help", "this card"),
)


def help_blocks(problem: str | None = None) -> list[dict[str, Any]]:
    """The usage card, optionally opened by what was wrong with the last command."""
    lines = "\n".join(f"`/incident {usage}` — {what}" for usage, what in HELP_LINES)
    blocks: list[Block] = []
    if problem:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f":warning: {problem}")))
    blocks += [
        SectionBlock(text=MarkdownTextObject(text=f"*Incident commands*\n{lines}")),
        ContextBlock(elements=[MarkdownTextObject(
            text="In an incident channel, commands apply to that incident. "
                 "Severity guide: " + decision_tree_hint())]),
    ]
    return _blocks(*blocks)


def incident_list(incidents: list[Incident], now: datetime) -> list[dict[str, Any]]:
    """Open incidents, one section each (Slack allows 50 blocks; the rest are counted)."""
    if not incidents:
        return _blocks(SectionBlock(text=MarkdownTextObject(
            text=":white_check_mark: No open incidents.")))
    shown = incidents[:45]
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(
        text=f"Open incidents ({len(incidents)})"))]
    for incident in shown:
        ic = incident.holder(Role.IC.value)
        age = format_age(now - incident.declared_at)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=truncate(
            f"{SEVERITY_EMOJI[Severity(incident.severity)]} *{incident.severity}* "
            f"<#{incident.channel_id}> {escape(incident.title)}\n"
            f"{Status(incident.status).label} · IC {mention(ic)} · open {age}", SECTION_LIMIT))))
    if len(incidents) > len(shown):
        blocks.append(DividerBlock())
        blocks.append(ContextBlock(elements=[MarkdownTextObject(
            text=f"…and {len(incidents) - len(shown)} more.")]))
    return _blocks(*blocks)


def format_age(delta: Any) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


# -- status updates, notes, reminders -----------------------------------------------------


def _update_body(update: StatusUpdate) -> str:
    eta = escape(update.eta) if update.eta else "not yet known"
    lines = [f"*Impact:* {escape(update.impact) or '_not stated_'}",
             f"*Current action:* {escape(update.current_action) or '_not stated_'}",
             f"*ETA:* {eta}"]
    if update.next_update_at:
        lines.append(f"*Next update:* {slack_date(update.next_update_at)}")
    return "\n".join(lines)


def status_update_text(incident: Incident, update: StatusUpdate, *,
                       link_channel: bool = False) -> str:
    """The seeds' internal update: `[SEV2] - [Service] - [Status]`, Impact, Current action, ETA."""
    service = escape(incident.service or incident.title)
    head = f"*[{update.severity}] - [{service}] - [{Status(update.status).label}]*"
    where = f" in <#{incident.channel_id}>" if link_channel else ""
    text = f"{head}{where}\n{_update_body(update)}\n_Posted by {mention(update.author_id)}_"
    return truncate(text, 39_000)


def private_broadcast_line(incident: Incident, what: str) -> str:
    """The only thing a private incident shows outside its channel."""
    return f":lock: A private {incident.severity} incident {what}."


def note_text(user_id: str, text: str) -> str:
    return f":pushpin: Key event noted by {mention(user_id)}: {escape(text)}"


def reminder_text(ic: str | None, comms: str | None, minutes: int) -> str:
    people = " ".join(dict.fromkeys(mention(u) for u in (ic, comms) if u)) or "Team"
    return f":alarm_clock: {people}: no status update for {minutes} min. Time to post one."


def reminder_blocks(incident: Incident, ic: str | None, comms: str | None,
                    minutes: int) -> list[dict[str, Any]]:
    value = str(incident.id)
    return _blocks(
        SectionBlock(text=MarkdownTextObject(text=reminder_text(ic, comms, minutes))),
        ActionsBlock(block_id="reminder_actions", elements=[
            ButtonElement(text="Post update", action_id=REMINDER_POST_UPDATE, value=value,
                          style="primary"),
            ButtonElement(text="Snooze", action_id=REMINDER_SNOOZE, value=value),
        ]),
    )


def escalation_text(incident: Incident, minutes: int) -> str:
    ic = incident.holder(Role.IC.value)
    return (f":rotating_light: *Escalation:* {incident.severity} incident <#{incident.channel_id}> "
            f"({escape(incident.title)}) has had no status update for {minutes} min. "
            f"IC: {mention(ic)}.")


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


def key_events_blocks(incident: Incident, events: list[TimelineEvent]) -> list[dict[str, Any]]:
    """The ephemeral `/incident timeline` summary."""
    header = f"*Key events of {escape(incident.title)}* ({len(events)})"
    if not events:
        return _blocks(SectionBlock(text=MarkdownTextObject(
            text=f"{header}\nNone yet. Add one with `/incident note <text>` or react "
                 ":pushpin: to a message.")))
    lines = [f"`{e.occurred_at:%H:%M}` {escape(e.text)}"
             + (f" — {mention(e.actor_id)}" if e.actor_id else "") for e in events]
    chunks: list[str] = []
    current = header
    for line in lines:
        line = truncate(line, 500)
        if len(current) + len(line) + 1 > SECTION_LIMIT:
            chunks.append(current)
            current = line
        else:
            current += "\n" + line
    chunks.append(current)
    sections = [SectionBlock(text=MarkdownTextObject(text=c)) for c in chunks[:49]]
    return _blocks(*sections, ContextBlock(elements=[MarkdownTextObject(text="Times in UTC")]))


# -- resolution, action items, statistics --------------------------------------------------


def all_clear_text(incident: Incident, *, link_channel: bool = False) -> str:
    took = format_duration(durations(incident).resolve)
    where = f" <#{incident.channel_id}>" if link_channel else ""
    text = (f":white_check_mark: *All clear:* {incident.severity} incident{where} "
            f"{escape(incident.title)} is resolved after {took}.")
    if incident.resolution_summary:
        text += f"\n*Resolution:* {escape(incident.resolution_summary)}"
    return truncate(text, 3000)


def all_clear_blocks(incident: Incident) -> list[dict[str, Any]]:
    due = (f"The postmortem draft is due {slack_date(incident.postmortem_due_at)}."
           if incident.postmortem_due_at else "")
    return _blocks(
        SectionBlock(text=MarkdownTextObject(text=all_clear_text(incident))),
        ContextBlock(elements=[MarkdownTextObject(
            text=f"{due} Reopen with `/incident reopen` if it comes back.".strip())]),
        ActionsBlock(block_id="all_clear_actions", elements=[
            ButtonElement(text="Add action item", action_id=ADD_ACTION, value=str(incident.id)),
        ]),
    )


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


def action_line(item: ActionItem) -> str:
    done = ":white_check_mark: " if item.status == "done" else ""
    return (f"{done}*{item.priority}* {escape(item.text)} — {mention(item.owner_id)}, "
            f"due {item.due_date.isoformat()} ({item.status})")


def action_added_text(item: ActionItem) -> str:
    return f":clipboard: Action item added: {action_line(item)}"


def actions_blocks(incident: Incident, items: list[ActionItem]) -> list[dict[str, Any]]:
    """The action items, each open one with a Mark done button (at most 48 shown)."""
    header = SectionBlock(text=MarkdownTextObject(
        text=f"*Action items of {escape(incident.title)}* ({len(items)})"))
    if not items:
        return _blocks(header, ContextBlock(elements=[MarkdownTextObject(
            text="None yet: `/incident action <text> @owner [due YYYY-MM-DD] [P0-P3]`.")]))
    sections: list[Block] = [header]
    for item in items[:48]:
        accessory = None if item.status == "done" else ButtonElement(
            text="Mark done", action_id=ACTION_DONE, value=str(item.id))
        sections.append(SectionBlock(text=MarkdownTextObject(
            text=truncate(action_line(item), SECTION_LIMIT)), accessory=accessory))
    if len(items) > 48:
        sections.append(ContextBlock(elements=[MarkdownTextObject(
            text=f"…and {len(items) - 48} more.")]))
    return _blocks(*sections)


def stats_blocks(stats: PeriodStats) -> list[dict[str, Any]]:
    lines = [f"*{row.severity}*: {row.count} incident(s) · MTTA {format_duration(row.mtta_s)} · "
             f"MTTM {format_duration(row.mttm_s)} · MTTR {format_duration(row.mttr_s)}"
             for row in stats.by_severity]
    causes = ", ".join(f"{escape(cause)} ({count}×)" for cause, count in stats.repeat_causes[:10])
    return _blocks(
        HeaderBlock(text=PlainTextObject(text=f"Incidents in the last {stats.days:g} days")),
        SectionBlock(text=MarkdownTextObject(text="\n".join(lines))),
        SectionBlock(text=MarkdownTextObject(text=truncate(
            f"*Total:* {stats.total} · *Open action items:* {stats.open_actions}\n"
            f"*Repeat causes:* {causes or 'none'}", SECTION_LIMIT))),
        ContextBlock(elements=[MarkdownTextObject(
            text="MTTA/MTTM/MTTR: mean time from declaration to acknowledgement, mitigation "
                 "and resolution.")]),
    )


def alert_text(notice: Any) -> str:
    state = ":rotating_light: Firing" if notice.firing else ":large_green_circle: Resolved"
    lines = "\n".join(f"• {escape(line)}" for line in notice.lines)
    return truncate(f"*{state}* ({escape(notice.source)}): {escape(notice.title)}\n{lines}",
                    SECTION_LIMIT)


def alert_blocks(incident: Incident, notice: Any) -> list[dict[str, Any]]:
    """The alert as posted in the channel; a resolved alert offers to resolve the incident."""
    parts: list[Block] = [SectionBlock(text=MarkdownTextObject(text=alert_text(notice)))]
    if not notice.firing and Status(incident.status).is_open:
        parts.append(ActionsBlock(block_id="alert_actions", elements=[ButtonElement(
            text="Resolve incident", action_id=RESOLVE, value=str(incident.id),
            style="primary")]))
    return _blocks(*parts)


DRILL_MARK = ":construction: *DRILL*"


def mark_drill(
    text: str, message_blocks: list[dict[str, Any]] | None
) -> tuple[str, list[dict[str, Any]] | None]:
    """Mark a drill's message as such, in its text and at the top of its blocks."""
    marked = f"{DRILL_MARK} · {text}"
    if not message_blocks:
        return marked, None
    banner = ContextBlock(elements=[MarkdownTextObject(
        text=f"{DRILL_MARK}: practice incident, not a real outage")]).to_dict()
    return marked, [banner, *message_blocks][:50]


def comms_blocks(incident: Incident, drafts: list[Any]) -> list[dict[str, Any]]:
    """Ready-to-copy drafts for the Communications Lead (shown only to who asked)."""
    comms_lead = incident.holder(Role.COMMS.value)
    parts: list[Block] = [SectionBlock(text=MarkdownTextObject(
        text=f"*Communication drafts for {escape(incident.title)}* — for the Communications "
             f"Lead ({mention(comms_lead)}). Check the facts, then send.")),
    ]
    for draft in drafts:
        body = truncate(escape(draft.text), SECTION_LIMIT - 60)
        parts.append(SectionBlock(text=MarkdownTextObject(text=f"*{draft.title}*\n```{body}```")))
    return _blocks(*parts)


def runbook_text(service: str, runbook: str) -> str:
    return f":book: Runbook for *{escape(service)}*: <{runbook}|{escape(service)} runbook>"


PAGE_ACK = "page_acknowledge"


def page_message(incident: Incident, page: Any) -> tuple[str, list[dict[str, Any]]]:
    """The DM a paged person receives, with the Acknowledge button."""
    text = (f":pager: You are paged for *{escape(page.service)}*: {incident.severity} incident "
            f"<#{incident.channel_id}> {escape(incident.title)}.")
    return text, _blocks(
        SectionBlock(text=MarkdownTextObject(text=text)),
        ActionsBlock(block_id="page_actions", elements=[ButtonElement(
            text="Acknowledge", action_id=PAGE_ACK, value=str(page.id), style="primary")]),
    )


def nudge_text(incident: Incident) -> str:
    ic = incident.holder(Role.IC.value)
    return (f":wave: {mention(ic)}: this incident has been quiet for a while. Is it still "
            "active? Post an update with `/incident update`, or resolve it with "
            "`/incident resolve`.")


def failed_jobs_blocks(jobs: list[Any], stats: Any) -> list[dict[str, Any]]:
    """Failed jobs for an admin: what failed, when, with its last error, and how to retry."""
    lines = [f"*#{job.id}* `{escape(job.function)}` failed {slack_date(job.finished_at)} "
             f"after {job.attempts} attempts: {escape((job.error or '')[:300])}"
             for job in jobs] or ["No failed jobs."]
    return _blocks(
        HeaderBlock(text=PlainTextObject(text="Jobs")),
        SectionBlock(text=MarkdownTextObject(text=truncate(
            f"*Pending:* {stats.pending} (oldest {stats.oldest_pending_s:.0f}s) · "
            f"*Failed:* {stats.failed}", SECTION_LIMIT))),
        SectionBlock(text=MarkdownTextObject(text=truncate("\n".join(lines), SECTION_LIMIT))),
        ContextBlock(elements=[MarkdownTextObject(
            text="`/incident admin retry <id>` runs a failed job again.")]),
    )
