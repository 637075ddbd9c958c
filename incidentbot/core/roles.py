"""Incident roles (seeds 001, 002, 004) and how people name them in commands."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """A role someone holds in one incident; the IC holds every role not yet delegated."""

    IC = "ic"
    SCRIBE = "scribe"
    COMMS = "comms"
    TECH = "tech"
    OPS = "ops"
    PLANNING = "planning"

    @property
    def title(self) -> str:
        return ROLE_TITLES[self]

    @classmethod
    def parse(cls, text: str) -> Role | None:
        """Accept the short names and common aliases (`commander`, `sme`, ...)."""
        return _ALIASES.get(text.strip().lower().replace("_", "-"))


ROLE_TITLES: dict[Role, str] = {
    Role.IC: "Incident Commander",
    Role.SCRIBE: "Scribe",
    Role.COMMS: "Communications Lead",
    Role.TECH: "Tech Lead / SME",
    Role.OPS: "Ops Lead",
    Role.PLANNING: "Planning",
}

_ALIASES: dict[str, Role] = {
    **{role.value: role for role in Role},
    "commander": Role.IC,
    "incident-commander": Role.IC,
    "communications": Role.COMMS,
    "comms-lead": Role.COMMS,
    "sme": Role.TECH,
    "tech-lead": Role.TECH,
    "ops-lead": Role.OPS,
}
