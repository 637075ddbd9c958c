"""Alerts from monitoring (Alertmanager webhook v4, or a generic webhook) as incident input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

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
    links: tuple[tuple[str, str], ...] = ()  # (label, URL): runbook, graph, the source

    @property
    def request_key(self) -> str:
        """Same group, same outbreak: one incident however many notifications arrive."""
        return f"alert:{self.group_key}:{self.started}"[:200]


def severity_for(label: str | None) -> Severity:
    return SEVERITY_LABELS.get((label or "").strip().lower(), Severity.SEV3)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # senders add fields; no coercion


class _Alert(_Payload):  # field names as Alertmanager sends them
    status: str = "firing"
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    startsAt: str = ""
    generatorURL: str = ""


class _AlertmanagerPayload(_Payload):
    groupKey: str
    status: Literal["firing", "resolved"] = "firing"
    alerts: list[_Alert]
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""


class _GenericPayload(_Payload):
    title: str
    dedupe_key: str
    severity: str = ""
    service: str = ""
    status: Literal["firing", "resolved"] = "firing"
    source: str = "webhook"
    started_at: str = ""
    link: str = ""


M = TypeVar("M", bound=_Payload)


def _read(model: type[M], payload: Any) -> M:
    """The payload as `model`; an IncidentError naming each field that is wrong."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'payload'}: {error['msg'].lower()}"
            for error in exc.errors()[:5])
        raise IncidentError(problems) from None


def from_alertmanager(payload: Any) -> AlertNotice:
    """Parse Alertmanager's webhook payload (version 4); IncidentError naming what is wrong."""
    message = _read(_AlertmanagerPayload, payload)
    if not message.groupKey.strip():
        raise IncidentError("groupKey: must not be empty")
    alerts = message.alerts
    first = alerts[0] if alerts else _Alert()
    labels = {**first.labels, **message.commonLabels}
    annotations = {**first.annotations, **message.commonAnnotations}
    name = labels.get("alertname") or message.groupLabels.get("alertname")
    title = annotations.get("summary") or name or "Alert"
    starts = sorted(a.startsAt for a in alerts if a.startsAt)
    lines = tuple(_alert_line(a) for a in alerts[:MAX_ALERTS_SHOWN])
    if len(alerts) > MAX_ALERTS_SHOWN:
        lines += (f"…and {len(alerts) - MAX_ALERTS_SHOWN} more",)
    return AlertNotice(
        source="Alertmanager", group_key=message.groupKey.strip(),
        firing=message.status == "firing", title=title[:200],
        severity=severity_for(labels.get("severity")),
        service=(labels.get("service") or labels.get("job") or "")[:120],
        started=starts[0] if starts else "", lines=lines,
        links=_links(("Runbook", annotations.get("runbook_url", "")),
                     ("Graph", first.generatorURL), ("Alertmanager", message.externalURL)),
    )


def from_generic(payload: Any) -> AlertNotice:
    """`{"title", "dedupe_key", "severity", "service", "status": "firing"|"resolved", ...}`."""
    message = _read(_GenericPayload, payload)
    title, key = message.title.strip(), message.dedupe_key.strip()
    if not title or not key:
        raise IncidentError("title and dedupe_key must not be empty")
    severity = Severity.parse(message.severity) or severity_for(message.severity)
    return AlertNotice(
        source=message.source[:40], group_key=key[:150], firing=message.status == "firing",
        title=title[:200], severity=severity, service=message.service[:120],
        started=message.started_at, lines=(title,), links=_links(("Link", message.link)),
    )


def _links(*candidates: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """The web links among `candidates` (anything else could be a disguised link)."""
    return tuple((label, url) for label, url in candidates
                 if url.startswith(("https://", "http://")) and len(url) <= 1000)


def _alert_line(alert: _Alert) -> str:
    name = alert.labels.get("alertname", "alert")
    where = alert.labels.get("instance") or alert.labels.get("job") or ""
    text = alert.annotations.get("description") or alert.annotations.get("summary") or ""
    return " · ".join(p for p in (f"[{alert.status}] {name}", where, text) if p)[:300]
