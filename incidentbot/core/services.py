"""The service catalog (seed 004's runbook index): owners, runbook, default severity and the
escalation path of each service, read from a YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field
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
class Service:
    name: str
    owners: tuple[str, ...] = ()
    runbook: str = ""
    default_severity: Severity = Severity.SEV3
    escalation: Escalation = field(default_factory=Escalation)


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
    unknown = set(data) - {"name", "owners", "runbook", "default_severity", "escalation"}
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
                   default_severity=severity, escalation=_escalation(where, name, data))


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
