"""Block Kit builders: pure functions from incident data to blocks and views.

Everything a person typed is escaped before it goes into `mrkdwn`, so nobody can make the
bot ping `@channel` or show a disguised link.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from incidentbot.core.metrics import durations, format_duration
from incidentbot.core.roles import Role
from incidentbot.core.severity import (
    SEVERITY_INFO,
    Severity,
)
from incidentbot.core.status import Status
from incidentbot.models import ActionItem, Incident, StatusUpdate

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
CRITERIA = "criteria"

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


def as_dicts(*blocks: Block) -> list[dict[str, Any]]:
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
    return as_dicts(*blocks)


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
    return as_dicts(
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
    return as_dicts(
        SectionBlock(text=MarkdownTextObject(text=all_clear_text(incident))),
        ContextBlock(elements=[MarkdownTextObject(
            text=f"{due} Reopen with `/incident reopen` if it comes back.".strip())]),
        ActionsBlock(block_id="all_clear_actions", elements=[
            ButtonElement(text="Add action item", action_id=ADD_ACTION, value=str(incident.id)),
        ]),
    )



def action_line(item: ActionItem) -> str:
    done = ":white_check_mark: " if item.status == "done" else ""
    return (f"{done}*{item.priority}* {escape(item.text)} — {mention(item.owner_id)}, "
            f"due {item.due_date.isoformat()} ({item.status})")


def action_added_text(item: ActionItem) -> str:
    return f":clipboard: Action item added: {action_line(item)}"


def alert_text(notice: Any) -> str:
    state = ":rotating_light: Firing" if notice.firing else ":large_green_circle: Resolved"
    lines = "\n".join(f"• {escape(line)}" for line in notice.lines)
    links = " · ".join(f"<{url.replace('>', '%3E').replace('|', '%7C')}|{label}>"
                       for label, url in notice.links)
    return truncate(f"*{state}* ({escape(notice.source)}): {escape(notice.title)}\n{lines}"
                    + (f"\n{links}" if links else ""), SECTION_LIMIT)


def alert_blocks(incident: Incident, notice: Any) -> list[dict[str, Any]]:
    """The alert as posted in the channel; a resolved alert offers to resolve the incident."""
    parts: list[Block] = [SectionBlock(text=MarkdownTextObject(text=alert_text(notice)))]
    if not notice.firing and Status(incident.status).is_open:
        parts.append(ActionsBlock(block_id="alert_actions", elements=[ButtonElement(
            text="Resolve incident", action_id=RESOLVE, value=str(incident.id),
            style="primary")]))
    return as_dicts(*parts)


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


def runbook_text(service: str, runbook: str) -> str:
    return f":book: Runbook for *{escape(service)}*: <{runbook}|{escape(service)} runbook>"


PAGE_ACK = "page_acknowledge"
PAGE_ACK_COMMAND = "page_acknowledge_command"


def page_message(incident: Incident, page: Any) -> tuple[str, list[dict[str, Any]]]:
    """The DM a paged person receives, with the Acknowledge button (and, while the incident
    has no incident commander, Acknowledge and take command)."""
    text = (f":pager: You are paged for *{escape(page.service)}*: {incident.severity} incident "
            f"<#{incident.channel_id}> {escape(incident.title)}.")
    buttons = [ButtonElement(text="Acknowledge", action_id=PAGE_ACK, value=str(page.id),
                             style="primary")]
    if incident.holder(Role.IC.value) is None:
        buttons.append(ButtonElement(text="Acknowledge and take command",
                                     action_id=PAGE_ACK_COMMAND, value=str(page.id)))
    return text, as_dicts(
        SectionBlock(text=MarkdownTextObject(text=text)),
        ActionsBlock(block_id="page_actions", elements=buttons),
    )


def unanswered_page_text(incident: Incident, step: Any, repeats: int) -> str:
    """Nobody acknowledged a page: who was paged when, and what happens next."""
    paged = "; ".join(
        f"{', '.join(mention(u) for u in users)} at "
        f"{slack_date(datetime.fromisoformat(at))}" for users, at in step.paged)
    service = escape(step.page.service)
    then = (f"Paging the path again from the start (round {step.round} of {repeats + 1})."
            if step.notify else
            f"I have stopped paging: page someone by hand (`/incident page {service}`) or "
            "call them.")
    return (f":rotating_light: Nobody acknowledged the page for *{service}* in "
            f"<#{incident.channel_id}>. Paged: {paged}. {then}")


def nudge_text(incident: Incident) -> str:
    ic = incident.holder(Role.IC.value)
    return (f":wave: {mention(ic)}: this incident has been quiet for a while. Is it still "
            "active? Post an update with `/incident update`, or resolve it with "
            "`/incident resolve`.")
