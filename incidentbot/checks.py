"""Start-up checks that settings validation alone cannot make: the postmortem template
renders, the database URL names a supported database whose SQLite directory is writable.
Each problem is one sentence that names the setting and what to do."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from incidentbot.core import postmortem
from incidentbot.models import Incident, TimelineEvent

SUPPORTED_DATABASES = ("sqlite", "postgresql")


def problems(postmortem_template: str, database_url: str) -> list[str]:
    return [*_template_problems(postmortem_template), *_database_problems(database_url)]


def _template_problems(path: str) -> list[str]:
    if not path:
        return []
    if not Path(path).is_file():
        return [f"POSTMORTEM_TEMPLATE: {path} is not a file; point it at a Jinja2 Markdown "
                "template or leave it empty for the built-in one."]
    try:
        postmortem.render(sample_postmortem(), template_path=Path(path))
    except (jinja2.TemplateError, OSError, UnicodeDecodeError) as exc:
        return [f"POSTMORTEM_TEMPLATE: {path} does not render a sample incident "
                f"({type(exc).__name__}: {exc}); fix the template or leave the setting empty."]
    return []


def sample_postmortem() -> postmortem.PostmortemInput:
    """A small resolved incident to render a template with."""
    start = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    incident = Incident(
        id=1, title="Sample incident", severity="SEV2", status="resolved", service="api",
        description="", channel_id="C1", channel_name="inc-sample", declared_by="U1",
        declared_at=start, acknowledged_at=start + timedelta(minutes=2),
        mitigated_at=start + timedelta(minutes=20), resolved_at=start + timedelta(minutes=40),
        resolution_summary="Rolled back", root_cause="A bad deploy", customer_impact="",
        follow_up_needed=False, is_private=False, is_drill=False, roles=[])
    event = TimelineEvent(id=1, incident_id=1, kind="note", text="Rolled back", actor_id="U1",
                          occurred_at=start + timedelta(minutes=15), is_key=True, data={})
    return postmortem.PostmortemInput(incident=incident, events=[event], action_items=[],
                                      role_history=[])


def _database_problems(url: str) -> list[str]:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return [f"DATABASE_URL: `{url}` is not a database URL; use sqlite:///incidentbot.db or "
                "postgresql://user:password@host:5432/incidentbot."]
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_DATABASES:
        return [f"DATABASE_URL: {backend} is not supported; use SQLite (sqlite:///file.db) or "
                "PostgreSQL (postgresql://user:password@host:5432/incidentbot)."]
    database = parsed.database or ""
    if backend != "sqlite" or database in ("", ":memory:") or "mode=memory" in url:
        return []
    directory = Path(database).resolve().parent
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        return [f"DATABASE_URL: the SQLite file's directory {directory} does not exist or is "
                "not writable by this user; create it or point DATABASE_URL elsewhere."]
    return []
