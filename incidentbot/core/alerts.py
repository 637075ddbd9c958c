"""Alerts from monitoring (Alertmanager webhook v4, or a generic webhook) as incident input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from incidentbot.core.errors import IncidentError
from incidentbot.core.severity import Severity

# Alertmanager `severity` label values, mapped onto the seeds' levels.
SEVERITY_LABELS = {
    "critical": Severity.SEV1, "page": Severity.SEV1, "sev1": Severity.SEV1,
    "high": Severity.SEV2, "error": Severity.SEV2, "major": Severity.SEV2, "sev2": Severity.SEV2,
    "warning": Severity.SEV3, "minor": Severity.SEV3, "sev3": Severity.SEV3,
    "info": Severity.SEV4, "low": Severity.SEV4, "none": Severity.SEV4, "sev4": Severity.SEV4,
}
MAX_ALERTS_SHOWN = 10


@dataclass(frozen=True)
class AlertNotice:
    """One notification about an alert group: firing or resolved."""

    source: str
    group_key: str
    firing: bool
    title: str
    severity: Severity
    service: str
    started: str  # the earliest start of the group's alerts (ISO 8601, as sent)
    lines: tuple[str, ...]  # one line per alert, for the channel
    link: str = ""

    @property
    def request_key(self) -> str:
        """Same group, same outbreak: one incident however many notifications arrive."""
        return f"alert:{self.group_key}:{self.started}"[:200]


def severity_for(label: str | None) -> Severity:
    return SEVERITY_LABELS.get((label or "").strip().lower(), Severity.SEV3)


def from_alertmanager(payload: Any) -> AlertNotice:
    """Parse Alertmanager's webhook payload (version 4); IncidentError if it is not one."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise IncidentError("not an Alertmanager webhook payload (no alerts list)")
    group_key = str(payload.get("groupKey") or "").strip()
    if not group_key:
        raise IncidentError("the payload has no groupKey")
    alerts = [a for a in payload["alerts"] if isinstance(a, dict)]
    common_labels = _dict(payload.get("commonLabels"))
    common_annotations = _dict(payload.get("commonAnnotations"))
    first = alerts[0] if alerts else {}
    labels = {**_dict(first.get("labels")), **common_labels}
    annotations = {**_dict(first.get("annotations")), **common_annotations}
    name = labels.get("alertname") or _dict(payload.get("groupLabels")).get("alertname")
    title = annotations.get("summary") or name or "Alert"
    starts = sorted(str(a.get("startsAt") or "") for a in alerts if a.get("startsAt"))
    lines = tuple(_alert_line(a) for a in alerts[:MAX_ALERTS_SHOWN])
    if len(alerts) > MAX_ALERTS_SHOWN:
        lines += (f"…and {len(alerts) - MAX_ALERTS_SHOWN} more",)
    return AlertNotice(
        source="Alertmanager", group_key=group_key,
        firing=str(payload.get("status", "firing")).lower() == "firing",
        title=str(title)[:200], severity=severity_for(labels.get("severity")),
        service=str(labels.get("service") or labels.get("job") or "")[:120],
        started=starts[0] if starts else "", lines=lines,
        link=str(payload.get("externalURL") or ""),
    )


def from_generic(payload: Any) -> AlertNotice:
    """`{"title", "severity", "service", "dedupe_key", "status": "firing"|"resolved"}`."""
    if not isinstance(payload, dict):
        raise IncidentError("send a JSON object")
    title = str(payload.get("title") or "").strip()
    key = str(payload.get("dedupe_key") or "").strip()
    if not title or not key:
        raise IncidentError("title and dedupe_key are required")
    severity = Severity.parse(str(payload.get("severity") or "")) or severity_for(
        str(payload.get("severity") or ""))
    return AlertNotice(
        source=str(payload.get("source") or "webhook")[:40], group_key=key[:150],
        firing=str(payload.get("status", "firing")).lower() != "resolved", title=title[:200],
        severity=severity, service=str(payload.get("service") or "")[:120],
        started=str(payload.get("started_at") or ""), lines=(title,),
        link=str(payload.get("link") or ""),
    )


def _dict(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _alert_line(alert: dict[str, Any]) -> str:
    labels, annotations = _dict(alert.get("labels")), _dict(alert.get("annotations"))
    name = labels.get("alertname", "alert")
    where = labels.get("instance") or labels.get("job") or ""
    text = annotations.get("description") or annotations.get("summary") or ""
    status = str(alert.get("status") or "firing")
    return " · ".join(p for p in (f"[{status}] {name}", where, text) if p)[:300]
