"""The incident status lifecycle: investigating → identified → mitigated → resolved → closed."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    MITIGATED = "mitigated"
    RESOLVED = "resolved"
    CLOSED = "closed"

    @property
    def label(self) -> str:
        return self.value.capitalize()

    @property
    def is_open(self) -> bool:
        return self in ACTIVE_STATUSES

    @classmethod
    def parse(cls, text: str) -> Status | None:
        try:
            return cls(text.strip().lower())
        except ValueError:
            return None


ACTIVE_STATUSES = (Status.INVESTIGATING, Status.IDENTIFIED, Status.MITIGATED)

# Statuses a person may set with `/incident status` or the status modal.
SETTABLE_STATUSES = (*ACTIVE_STATUSES, Status.RESOLVED)


def allowed_next(current: Status) -> tuple[Status, ...]:
    """Where an incident may go from `current`.

    Active statuses move freely among themselves (a mitigation can fail) and on to resolved;
    a resolved incident can be reopened (back to investigating) or closed; closed is final.
    """
    if current.is_open:
        return tuple(s for s in SETTABLE_STATUSES if s != current)
    if current is Status.RESOLVED:
        return (Status.INVESTIGATING, Status.CLOSED)
    return ()
