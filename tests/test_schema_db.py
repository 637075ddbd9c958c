"""The schema the migrations build: the models' own, with an index under every lookup that
runs per request or at start-up (SQLite file and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from incidentbot.core import lifecycle, postmortem, updates
from incidentbot.core.lifecycle import Declaration
from incidentbot.models import Base
from tests.test_lifecycle_db import T0

SCANNED_TABLES = ("role_assignments", "timeline_events")


def test_migrations_build_exactly_the_models_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in differences if "apscheduler" not in str(d)] == []


@contextmanager
def statements_of(engine: Engine) -> Iterator[list[tuple[str, object]]]:
    """Every SELECT run on `engine` inside the block, with its parameters."""
    seen: list[tuple[str, object]] = []

    def capture(_conn: object, _cursor: object, statement: str, parameters: object,
                *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def full_scans(engine: Engine, statement: str, parameters: object) -> list[str]:
    """The plan's steps that read all of a large table, with the planner told to use any
    index it can (PostgreSQL would seq-scan tables this small anyway)."""
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET enable_seqscan = off"))
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            return [f"{node['Node Type']} on {node['Relation Name']}"
                    for node in plan_nodes(cursor.fetchone()[0][0]["Plan"])
                    if node.get("Relation Name") in SCANNED_TABLES and reads_all(node)]
        cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        plan = [row[3] for row in cursor.fetchall()]
        return [s for s in plan if s.split()[:2] in (["SCAN", t] for t in SCANNED_TABLES)]


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def reads_all(node: dict[str, Any]) -> bool:
    """A sequential scan, or an index walked end to end (no index condition) and filtered."""
    return node["Node Type"] == "Seq Scan" or (
        node["Node Type"] in ("Index Scan", "Index Only Scan") and "Index Cond" not in node)


LOOKUPS: dict[str, Callable[[Session, int], object]] = {
    "incident by channel, with its roles": lambda s, _id: lifecycle.get_by_channel(s, "C100"),
    "postmortem input (role history)": lambda s, i: postmortem.load(s, i),
    "reminders a crash left unposted": lambda s, _id: updates.unposted_reminders(s),
}


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_lookups_use_an_index_not_a_scan(engine: Engine, lookup: str) -> None:
    with Session(engine) as session, session.begin():
        incident = lifecycle.record_declaration(
            session, Declaration(title="Checkout down", declared_by="UALICE"),
            channel_id="C100", channel_name="inc-20261125-checkout-down", now=T0)
        incident_id = incident.id
    with Session(engine) as session, statements_of(engine) as seen:
        LOOKUPS[lookup](session, incident_id)
    assert seen, "the lookup ran no query"
    scans = {statement: full_scans(engine, statement, parameters)
             for statement, parameters in seen}
    assert {s: found for s, found in scans.items() if found} == {}
