"""Answers to `/incident` commands shown to the person who asked: the usage card, lists,
the key events, action items, statistics, communication drafts and failed jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from incidentbot.core.metrics import PeriodStats, format_duration
from incidentbot.core.roles import Role
from incidentbot.core.severity import Severity, decision_tree_hint
from incidentbot.core.status import Status
from incidentbot.models import ActionItem, Incident, TimelineEvent
from incidentbot.slack.blocks import (
    ACTION_DONE,
    SECTION_LIMIT,
    SEVERITY_EMOJI,
    action_line,
    as_dicts,
    escape,
    mention,
    slack_date,
    truncate,
)

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
    ("oncall [service]", "who is on call now: primary, secondary, manager"),
    ("admin jobs | admin retry <id>", "failed background work (INCIDENT_ADMINS only)"),
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
    return as_dicts(*blocks)


def incident_list(incidents: list[Incident], now: datetime) -> list[dict[str, Any]]:
    """Open incidents, one section each (Slack allows 50 blocks; the rest are counted)."""
    if not incidents:
        return as_dicts(SectionBlock(text=MarkdownTextObject(
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
    return as_dicts(*blocks)


def format_age(delta: Any) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


# -- status updates, notes, reminders -----------------------------------------------------


def key_events_blocks(incident: Incident, events: list[TimelineEvent]) -> list[dict[str, Any]]:
    """The ephemeral `/incident timeline` summary."""
    header = f"*Key events of {escape(incident.title)}* ({len(events)})"
    if not events:
        return as_dicts(SectionBlock(text=MarkdownTextObject(
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
    return as_dicts(*sections, ContextBlock(elements=[MarkdownTextObject(text="Times in UTC")]))


# -- resolution, action items, statistics --------------------------------------------------


def actions_blocks(incident: Incident, items: list[ActionItem]) -> list[dict[str, Any]]:
    """The action items, each open one with a Mark done button (at most 48 shown)."""
    header = SectionBlock(text=MarkdownTextObject(
        text=f"*Action items of {escape(incident.title)}* ({len(items)})"))
    if not items:
        return as_dicts(header, ContextBlock(elements=[MarkdownTextObject(
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
    return as_dicts(*sections)


def stats_blocks(stats: PeriodStats) -> list[dict[str, Any]]:
    lines = [f"*{row.severity}*: {row.count} incident(s) · MTTA {format_duration(row.mtta_s)} · "
             f"MTTM {format_duration(row.mttm_s)} · MTTR {format_duration(row.mttr_s)}"
             for row in stats.by_severity]
    causes = ", ".join(f"{escape(cause)} ({count}×)" for cause, count in stats.repeat_causes[:10])
    return as_dicts(
        HeaderBlock(text=PlainTextObject(text=f"Incidents in the last {stats.days:g} days")),
        SectionBlock(text=MarkdownTextObject(text="\n".join(lines))),
        SectionBlock(text=MarkdownTextObject(text=truncate(
            f"*Total:* {stats.total} · *Open action items:* {stats.open_actions}\n"
            f"*Repeat causes:* {causes or 'none'}", SECTION_LIMIT))),
        ContextBlock(elements=[MarkdownTextObject(
            text="MTTA/MTTM/MTTR: mean time from declaration to acknowledgement, mitigation "
                 "and resolution.")]),
    )


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
    return as_dicts(*parts)


def failed_jobs_blocks(jobs: list[Any], stats: Any) -> list[dict[str, Any]]:
    """Failed jobs for an admin: what failed, when, with its last error, and how to retry."""
    lines = [f"*#{job.id}* `{escape(job.function)}` failed {slack_date(job.finished_at)} "
             f"after {job.attempts} attempts: {escape((job.error or '')[:300])}"
             for job in jobs] or ["No failed jobs."]
    return as_dicts(
        HeaderBlock(text=PlainTextObject(text="Jobs")),
        SectionBlock(text=MarkdownTextObject(text=truncate(
            f"*Pending:* {stats.pending} (oldest {stats.oldest_pending_s:.0f}s) · "
            f"*Failed in the last day:* {stats.failed}", SECTION_LIMIT))),
        SectionBlock(text=MarkdownTextObject(text=truncate("\n".join(lines), SECTION_LIMIT))),
        ContextBlock(elements=[MarkdownTextObject(
            text="`/incident admin retry <id>` runs a failed job again.")]),
    )


def oncall_blocks(rows: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Who is on call now for each service (name, escalation)."""
    lines = [f"*{escape(name)}*: primary {mention(path.primary or None)} · secondary "
             f"{mention(path.secondary or None)} · manager {mention(path.manager or None)}"
             for name, path in rows[:40]]
    return as_dicts(
        HeaderBlock(text=PlainTextObject(text="On call now")),
        SectionBlock(text=MarkdownTextObject(text=truncate("\n".join(lines), SECTION_LIMIT))))
