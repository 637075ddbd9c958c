"""Incident durations and the period statistics the seeds track (MTTA, MTTM, MTTR)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, cast, func, select
from sqlalchemy.orm import Session

from incidentbot.core.severity import Severity
from incidentbot.models import ActionItem, Incident, utcnow


@dataclass(frozen=True)
class Durations:
    """From declaration to acknowledgement, mitigation and resolution (None: not reached)."""

    acknowledge: timedelta | None
    mitigate: timedelta | None
    resolve: timedelta | None


def durations(incident: Incident) -> Durations:
    """An incident never marked mitigated counts as mitigated when it was resolved."""
    start = incident.declared_at

    def since_start(moment: datetime | None) -> timedelta | None:
        return None if moment is None else max(moment - start, timedelta(0))

    return Durations(
        acknowledge=since_start(incident.acknowledged_at),
        mitigate=since_start(incident.mitigated_at or incident.resolved_at),
        resolve=since_start(incident.resolved_at),
    )


def format_duration(value: timedelta | float | None) -> str:
    """`2h 05m`, `12m 30s`, `45s`, or `n/a`."""
    if value is None:
        return "n/a"
    seconds = round(value.total_seconds() if isinstance(value, timedelta) else value)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 48:
        return f"{hours // 24}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class SeverityStats:
    severity: str
    count: int
    mtta_s: float | None
    mttm_s: float | None
    mttr_s: float | None


@dataclass(frozen=True)
class PeriodStats:
    days: float
    since: datetime
    by_severity: list[SeverityStats]
    open_actions: int
    repeat_causes: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(row.count for row in self.by_severity)


def _seconds(session: Session, end: Any, start: Any) -> ColumnElement[float]:
    """`end - start` in seconds, computed by the database (SQLite or PostgreSQL)."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return cast(func.extract("epoch", end - start), Float)


def period_stats(
    session: Session, days: float, now: datetime | None = None,
    visible: ColumnElement[bool] | None = None,
) -> PeriodStats:
    """Counts and mean durations by severity for incidents declared in the last `days`."""
    now = now or utcnow()
    since = now - timedelta(days=days)
    scope = and_(Incident.declared_at >= since, Incident.is_drill.is_(False),
                 visible if visible is not None else True)
    start = Incident.declared_at
    mitigated = func.coalesce(Incident.mitigated_at, Incident.resolved_at)
    rows = session.execute(
        select(
            Incident.severity,
            func.count(Incident.id),
            func.avg(_seconds(session, Incident.acknowledged_at, start)),
            func.avg(_seconds(session, mitigated, start)),
            func.avg(_seconds(session, Incident.resolved_at, start)),
        ).where(scope).group_by(Incident.severity).order_by(Incident.severity)
    ).all()
    by_severity = [SeverityStats(str(r[0]), int(r[1]), _f(r[2]), _f(r[3]), _f(r[4])) for r in rows]
    open_actions = session.scalar(
        select(func.count(ActionItem.id)).join(Incident, Incident.id == ActionItem.incident_id)
        .where(scope, ActionItem.status == "open")) or 0
    cause = func.lower(func.trim(Incident.root_cause))
    repeats = session.execute(
        select(cause, func.count(Incident.id))
        .where(scope, case((Incident.root_cause == "", False), else_=True))
        .group_by(cause).having(func.count(Incident.id) > 1)
        .order_by(func.count(Incident.id).desc(), cause)
    ).all()
    return PeriodStats(days=days, since=since, by_severity=_all_severities(by_severity),
                       open_actions=int(open_actions),
                       repeat_causes=[(str(c), int(n)) for c, n in repeats])


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _all_severities(rows: list[SeverityStats]) -> list[SeverityStats]:
    found = {row.severity: row for row in rows}
    return [found.get(s.value, SeverityStats(s.value, 0, None, None, None)) for s in Severity]
