"""Who may run an incident, and the ledger of accepted request signatures (replays)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from incidentbot.core.roles import ROLE_TITLES, Role
from incidentbot.db import insert_ignore
from incidentbot.models import Incident, SeenRequest, utcnow

# Slack refuses timestamps older than 5 minutes, so a signature older than that cannot be
# replayed anyway; keep a margin.
REPLAY_WINDOW = timedelta(minutes=10)


LEDGER_KEY = ("signature",)


def remember(session: Session, signature: str, now: datetime) -> bool:
    """Record a request's signature; False when it was recorded before (a replay)."""
    row = {"signature": signature[:100], "seen_at": now}
    return insert_ignore(session, SeenRequest.__table__, row, LEDGER_KEY)


def forget_old_requests(session: Session, now: datetime | None = None) -> int:
    cutoff = (now or utcnow()) - REPLAY_WINDOW
    result = session.execute(delete(SeenRequest).where(SeenRequest.seen_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def commanders(incident: Incident) -> list[str]:
    """The people who run this incident: its current role holders (IC first)."""
    roles = incident.current_roles()
    ordered = [roles[r.value] for r in Role if r.value in roles]
    return list(dict.fromkeys(ordered))


def may_command(incident: Incident, user_id: str, admins: Iterable[str]) -> bool:
    """Role holders and incident admins may resolve, reopen, re-rate and hand off; while
    nobody holds a role (an alert declared it), anyone may, so it is never stuck."""
    holders = commanders(incident)
    return not holders or user_id in holders or user_id in set(admins)


def refusal(incident: Incident, action: str, has_admins: bool) -> str:
    """A polite refusal that names who can do it."""
    roles = incident.current_roles()
    who = ", ".join(f"<@{user}> ({ROLE_TITLES[Role(role)]})" for role, user in roles.items())
    admins = " or an incident admin" if has_admins else ""
    return (f"Sorry, only the people running this incident can {action}: {who or 'nobody yet'}"
            f"{admins}. Ask one of them, or ask the IC to give you a role.")
