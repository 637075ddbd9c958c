"""Databases for the bench: a fresh SQLite file or PostgreSQL schema, row counts, seeding.

The bot migrates its database itself. Only the 10,000-incident run writes rows directly,
through the bot's ORM models, after `python app.py --migrate`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, create_engine, insert, text
from sqlalchemy.engine import make_url

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
INTERVAL = timedelta(minutes=30)  # SEV2's default reminder interval


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """The URL of an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    schema, admin = f"bench_{uuid.uuid4().hex[:10]}", create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}) \
            .render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def connect(url: str) -> Iterator[Connection]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def count_messages(url: str, marker: str) -> tuple[int, int]:
    """(rows, distinct Slack ts) of the stored channel messages whose text starts `marker`."""
    with connect(url) as conn:
        rows, distinct = conn.execute(text(
            "SELECT count(*), count(DISTINCT slack_ts) FROM timeline_events "
            "WHERE kind = 'message' AND text LIKE :m"), {"m": marker + "%"}).one()
    return int(rows), int(distinct)


def seed_incidents(url: str, channels: Sequence[dict[str, str]], user: str,
                   due_at: Sequence[float]) -> None:
    """Open SEV2 incidents, one per fake channel (its message as the card), IC `user`,
    declared two days ago, each reminder due at its unix time and last updated an interval
    before (so that none escalates)."""
    from incidentbot.models import Incident, RoleAssignment

    old = datetime.now(UTC) - timedelta(days=2)
    dues = [datetime.fromtimestamp(at, UTC) for at in due_at]
    rows = [{"id": i, "title": f"Bench incident {i}", "severity": "SEV2",
             "status": "investigating", "channel_id": c["id"], "channel_name": f"inc-bench-{i}",
             "card_ts": c["card_ts"], "declared_by": user, "declared_at": old,
             "acknowledged_at": old, "next_update_due_at": due, "last_update_at": due - INTERVAL,
             "updated_at": old, "team_id": "T0TEST"}
            for i, (c, due) in enumerate(zip(channels, dues, strict=True), 1)]
    with connect(url) as conn:
        for chunk in range(0, len(rows), 2000):
            conn.execute(insert(Incident), rows[chunk:chunk + 2000])
            conn.execute(insert(RoleAssignment), [
                {"incident_id": row["id"], "role": "ic", "user_id": user, "assigned_by": user,
                 "assigned_at": old} for row in rows[chunk:chunk + 2000]])

