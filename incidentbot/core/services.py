"""The service catalog (seed 004's runbook index): owners, runbook, default severity and the
escalation path of each service, read from a YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from incidentbot.core.severity import Severity


class CatalogError(Exception):
    """The services file is malformed; the message names the file, line and problem."""


@dataclass(frozen=True)
class Escalation:
    primary: str = ""
    secondary: str = ""
    manager: str = ""


@dataclass(frozen=True)
class Override:
    """Someone else is primary from `start` until `end` (a swap, a holiday)."""

    user: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Rotation:
    """Primary on-call by turns: each person for `shift`, from `starts`; the next in line is
    secondary. An override makes its user primary while it lasts."""

    people: tuple[str, ...]
    starts: datetime
    shift: timedelta = timedelta(days=7)
    overrides: tuple[Override, ...] = ()

    def on_call(self, now: datetime) -> tuple[str, str]:
        """(primary, secondary) at `now`."""
        turn = int((now - self.starts) // self.shift) % len(self.people)
        primary = self.people[turn]
        secondary = self.people[(turn + 1) % len(self.people)] if len(self.people) > 1 else ""
        for override in self.overrides:
            if override.start <= now < override.end:
                primary = override.user
        return primary, "" if secondary == primary else secondary


@dataclass(frozen=True)
class Service:
    name: str
    owners: tuple[str, ...] = ()
    runbook: str = ""
    default_severity: Severity = Severity.SEV3
    escalation: Escalation = field(default_factory=Escalation)
    oncall: Rotation | None = None

    def escalation_at(self, now: datetime) -> Escalation:
        """Who is on call at `now`: the rotation's primary and secondary when there is one,
        else the fixed path; the manager always from `escalation`."""
        if self.oncall is None:
            return self.escalation
        primary, secondary = self.oncall.on_call(now)
        return Escalation(primary=primary, secondary=secondary,
                          manager=self.escalation.manager)


@dataclass(frozen=True)
class Catalog:
    services: tuple[Service, ...] = ()

    def get(self, name: str) -> Service | None:
        wanted = name.strip().lower()
        return next((s for s in self.services if s.name.lower() == wanted), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.services]


USER_OR_GROUP = ("U", "W", "S")


def load_catalog(path: str) -> Catalog:
    """Read SERVICES_FILE; an empty path gives an empty catalog."""
    if not path:
        return Catalog()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the services file ({exc.strerror})") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise CatalogError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") \
            from None
    if root is None:
        return Catalog()
    services_node = _services_node(path, root)
    services = [_service(path, node) for node in services_node.value]
    seen: set[str] = set()
    for node, service in zip(services_node.value, services, strict=True):
        if service.name.lower() in seen:
            raise CatalogError(f"{path}, line {node.start_mark.line + 1}: service "
                               f"{service.name!r} is listed twice")
        seen.add(service.name.lower())
    return Catalog(tuple(services))


def _services_node(path: str, root: yaml.Node) -> yaml.SequenceNode:
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if key.value == "services":
                root = value
                break
        else:
            raise CatalogError(f"{path}, line {root.start_mark.line + 1}: expected a top-level "
                               "'services:' list")
    if not isinstance(root, yaml.SequenceNode):
        raise CatalogError(f"{path}, line {root.start_mark.line + 1}: 'services' must be a "
                           "list of services")
    return root


def _service(path: str, node: yaml.Node) -> Service:
    where = f"{path}, line {node.start_mark.line + 1}"
    if not isinstance(node, yaml.MappingNode):
        raise CatalogError(f"{where}: each service must be a mapping with at least a name")
    data: dict[str, Any] = yaml.safe_load(yaml.serialize(node))
    unknown = set(data) - {"name", "owners", "runbook", "default_severity", "escalation",
                           "oncall"}
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = str(data.get("name") or "").strip()
    if not name:
        raise CatalogError(f"{where}: the service has no name")
    owners = data.get("owners") or []
    if isinstance(owners, str):
        owners = [owners]
    if not isinstance(owners, list) or not all(_is_id(o) for o in owners):
        raise CatalogError(f"{where}: owners of {name!r} must be user (U…) or user-group "
                           "(S…) IDs")
    runbook = str(data.get("runbook") or "")
    if runbook and not runbook.startswith(("https://", "http://")):
        raise CatalogError(f"{where}: the runbook of {name!r} must be an http(s) URL")
    severity = Severity.parse(str(data.get("default_severity") or "SEV3"))
    if severity is None:
        raise CatalogError(f"{where}: default_severity of {name!r} must be SEV1-SEV4")
    return Service(name=name, owners=tuple(str(o) for o in owners), runbook=runbook,
                   default_severity=severity, escalation=_escalation(where, name, data),
                   oncall=_rotation(where, name, data.get("oncall")))


def _rotation(where: str, name: str, raw: Any) -> Rotation | None:
    """`oncall: {rotation: [U…], starts: <ISO time>, shift_days: 7, overrides: [{user, from,
    to}]}`."""
    if raw is None:
        return None
    problem = f"{where}: oncall of {name!r}"
    if not isinstance(raw, dict) or set(raw) - {"rotation", "starts", "shift_days", "overrides"}:
        raise CatalogError(f"{problem} takes rotation, starts, shift_days, overrides")
    people = raw.get("rotation")
    if not isinstance(people, list) or not people or \
            not all(isinstance(u, str) and u[:1] in ("U", "W") for u in people):
        raise CatalogError(f"{problem}: rotation must be a list of user IDs")
    days = raw.get("shift_days", 7)
    if not isinstance(days, int | float) or isinstance(days, bool) or days <= 0:
        raise CatalogError(f"{problem}: shift_days must be a number of days above 0")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list):
        raise CatalogError(f"{problem}: overrides must be a list of {{user, from, to}}")
    return Rotation(people=tuple(people), starts=_moment(problem, "starts", raw.get("starts")),
                    shift=timedelta(days=days),
                    overrides=tuple(_override(problem, o) for o in overrides))


def _override(problem: str, raw: Any) -> Override:
    if not isinstance(raw, dict) or not (isinstance(raw.get("user"), str)
                                         and raw["user"][:1] in ("U", "W")):
        raise CatalogError(f"{problem}: each override needs a user ID, from and to")
    start, end = _moment(problem, "from", raw.get("from")), _moment(problem, "to", raw.get("to"))
    if end <= start:
        raise CatalogError(f"{problem}: an override must end after it starts")
    return Override(user=raw["user"], start=start, end=end)


def _moment(problem: str, key: str, value: Any) -> datetime:
    """A time from the file (YAML reads an unquoted ISO time as a datetime); UTC if no zone."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            value = None
    if not isinstance(value, datetime):
        raise CatalogError(f"{problem}: {key} must be a time such as 2026-01-05T09:00:00Z")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _escalation(where: str, name: str, data: dict[str, Any]) -> Escalation:
    raw = data.get("escalation") or {}
    if not isinstance(raw, dict) or set(raw) - {"primary", "secondary", "manager"}:
        raise CatalogError(f"{where}: escalation of {name!r} takes primary, secondary, manager")
    for step, user in raw.items():
        if not (isinstance(user, str) and user[:1] in ("U", "W")):
            raise CatalogError(f"{where}: escalation {step} of {name!r} must be a user ID")
    return Escalation(**{k: str(v) for k, v in raw.items()})


def _is_id(value: object) -> bool:
    return isinstance(value, str) and value[:1] in USER_OR_GROUP and value[1:].isalnum()
