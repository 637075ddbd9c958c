"""Communication drafts from the seeds' templates, filled in from the incident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from incidentbot.core.metrics import durations, format_duration
from incidentbot.core.status import Status
from incidentbot.models import Incident, StatusUpdate

STATUS_PAGE_STATE = {
    Status.INVESTIGATING: "INVESTIGATING", Status.IDENTIFIED: "IDENTIFIED",
    Status.MITIGATED: "MONITORING", Status.RESOLVED: "RESOLVED", Status.CLOSED: "RESOLVED",
}
TIME = "%Y-%m-%d %H:%M UTC"


@dataclass(frozen=True)
class Draft:
    title: str
    text: str


def drafts(incident: Incident, latest: StatusUpdate | None, now: datetime) -> list[Draft]:
    """Internal, executive and status-page updates; the customer email once resolved."""
    status = Status(incident.status)
    impact = (latest.impact if latest else "") or incident.customer_impact or "[who is affected]"
    action = (latest.current_action if latest else "") or "[what we are doing now]"
    eta = (latest.eta if latest else "") or "[ETA or time of the next update]"
    if incident.resolved_at:
        action = f"Resolved. {incident.resolution_summary}".strip()
        eta = f"none: resolved at {incident.resolved_at:{TIME}}"
    service = incident.service or incident.title
    found = [
        Draft("Internal update", f"[{incident.severity}] - [{service}] - [{status.label}]\n"
                                 f"Impact: {impact}\nCurrent action: {action}\nETA: {eta}"),
        Draft("Executive update", executive(incident, impact, latest, now)),
        Draft("Status page update", status_page(incident, impact, latest, now)),
    ]
    if incident.resolved_at:
        found.append(Draft("Customer email", customer_email(incident, impact)))
    return found


def communication_status(incident: Incident, latest: StatusUpdate | None) -> str:
    """What has been said so far, for the executive update."""
    said = (f"last status update posted {latest.posted_at:{TIME}}" if latest
            else "no status update posted yet")
    if incident.resolved_at:
        return f"{said}; resolved, the customer email below is ready to send"
    return said


def executive(incident: Incident, impact: str, latest: StatusUpdate | None,
              now: datetime) -> str:
    took = durations(incident)
    timeline = [f"- Declared {incident.declared_at:{TIME}}"]
    if incident.mitigated_at:
        timeline.append(f"- Mitigated {incident.mitigated_at:{TIME}} "
                        f"(after {format_duration(took.mitigate)})")
    if incident.resolved_at:
        timeline.append(f"- Resolved {incident.resolved_at:{TIME}} "
                        f"(after {format_duration(took.resolve)})")
    else:
        timeline.append(f"- Still {incident.status} as of {now:{TIME}}")
    return (f"{incident.severity} incident: {incident.title}\n"
            f"Business impact: {impact}\n"
            f"Customer communication status: {communication_status(incident, latest)}\n"
            "Timeline:\n" + "\n".join(timeline))


def status_page(incident: Incident, impact: str, latest: StatusUpdate | None,
                now: datetime) -> str:
    state = STATUS_PAGE_STATE[Status(incident.status)]
    next_at = latest.next_update_at if latest else incident.next_update_due_at
    lines = [f"[{state}] {incident.title}", "",
             f"We are {'monitoring a fix for' if state == 'MONITORING' else 'working on'} an "
             f"issue affecting {incident.service or 'our service'}: {impact}.",
             "", f"Posted: {now:{TIME}}"]
    if state == "RESOLVED":
        lines[2] = f"This incident has been resolved. {incident.resolution_summary}".strip()
    elif next_at:
        lines.append(f"Next update: {next_at:{TIME}}")
    return "\n".join(lines)


def customer_email(incident: Incident, impact: str) -> str:
    assert incident.resolved_at is not None
    return (f"Subject: [Resolved] Service Disruption - {incident.declared_at:%B %-d, %Y}\n\n"
            "Dear Customer,\n\n"
            f"We experienced a service disruption between {incident.declared_at:%H:%M} UTC and "
            f"{incident.resolved_at:%H:%M} UTC that may have affected "
            f"{incident.service or 'our service'}.\n\n"
            f"What happened:\n{incident.root_cause or '[cause in plain words]'}\n\n"
            f"Impact:\n{impact}\n\n"
            f"Resolution:\n{incident.resolution_summary or '[what restored service]'}\n\n"
            "Next steps:\nWe are conducting a full investigation and will implement additional "
            "safeguards to prevent similar issues.\n\n"
            "We sincerely apologize for the inconvenience.\n\n- The Engineering Team")
