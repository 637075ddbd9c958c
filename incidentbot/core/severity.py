"""Severity levels and the seeds' severity decision tree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class Severity(StrEnum):
    """SEV1 is the most severe."""

    SEV1 = "SEV1"
    SEV2 = "SEV2"
    SEV3 = "SEV3"
    SEV4 = "SEV4"

    @classmethod
    def parse(cls, text: str) -> Severity | None:
        """Accept `SEV2`, `sev2`, `sev-2` or `2`; None when it is not a severity."""
        cleaned = text.strip().upper().replace("-", "").replace(" ", "")
        if cleaned.isdigit():
            cleaned = f"SEV{cleaned}"
        try:
            return cls(cleaned)
        except ValueError:
            return None


DEFAULT_SEVERITY = Severity.SEV3


@dataclass(frozen=True)
class SeverityInfo:
    """What a severity means and what it demands (seed 001's table)."""

    definition: str
    response_time: str
    mttr_target: str
    communication: str


SEVERITY_INFO: dict[Severity, SeverityInfo] = {
    Severity.SEV1: SeverityInfo(
        "Complete outage, revenue impact, data loss risk", "Immediate", "4 hours",
        "Exec + all-hands",
    ),
    Severity.SEV2: SeverityInfo(
        "Major degradation, significant user impact", "< 15 min", "24 hours",
        "Leadership + affected teams",
    ),
    Severity.SEV3: SeverityInfo(
        "Minor degradation, limited user impact", "< 1 hour", "72 hours", "Team + stakeholders"
    ),
    Severity.SEV4: SeverityInfo(
        "No user impact, internal issue", "Next business day", "1 week", "Team only"
    ),
}

# Seed 001's decision tree, asked in order; the first "yes" decides.
DECISION_TREE: tuple[tuple[str, Severity], ...] = (
    ("Is revenue directly impacted?", Severity.SEV1),
    ("Are more than 10% of users affected?", Severity.SEV2),
    ("Is a critical workflow broken?", Severity.SEV2),
    ("Is there a workaround available?", Severity.SEV3),
    ("No user impact?", Severity.SEV4),
)


def decision_tree_hint() -> str:
    """The decision tree as one line of help text for the declare modal."""
    steps = ["Revenue directly impacted → SEV1", ">10% of users affected → SEV1-2",
             "Critical workflow broken → SEV2", "Workaround available → SEV3",
             "No user impact → SEV4"]
    return " · ".join(f"{i}. {s}" for i, s in enumerate(steps, start=1))


# Seed 002 §6: if any of these is true, the event is an incident.
WHEN_TO_DECLARE = (
    "Do you need to involve a second team in fixing the problem?",
    "Is the outage visible to customers?",
    "Is the issue unsolved even after an hour's concentrated analysis?",
)


def suggest_severity(answers: list[bool]) -> Severity:
    """Walk the decision tree with yes/no answers in its order; the first yes wins."""
    for (_question, severity), yes in zip(DECISION_TREE, answers, strict=False):
        if yes:
            return severity
    return DEFAULT_SEVERITY


# Seed 001's MTTR targets, for judging a response in the postmortem.
MTTR_TARGET: dict[Severity, timedelta] = {
    Severity.SEV1: timedelta(hours=4),
    Severity.SEV2: timedelta(hours=24),
    Severity.SEV3: timedelta(hours=72),
    Severity.SEV4: timedelta(weeks=1),
}
