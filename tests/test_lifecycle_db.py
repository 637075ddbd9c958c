"""Core lifecycle against real databases (SQLite file and PostgreSQL), migrations included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from incidentbot.core import lifecycle, timeline
from incidentbot.core.errors import InvalidTransition, NotAnIncidentChannel
from incidentbot.core.lifecycle import Declaration
from incidentbot.core.roles import Role
from incidentbot.core.severity import Severity
from incidentbot.core.status import Status
from incidentbot.core.timeline import EventKind
from incidentbot.db import migrate
from incidentbot.models import Incident, RoleAssignment, TimelineEvent

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def _declare(session: Session, channel: str = "C100", **fields: Any) -> Incident:
    declaration = Declaration(title="Checkout down", declared_by="UALICE", **fields)
    return lifecycle.record_declaration(
        session, declaration, channel_id=channel, channel_name="inc-20261125-checkout-down", now=T0
    )


def test_migrations_create_the_schema_and_are_idempotent(engine: Engine) -> None:
    migrate(engine)  # a second start applies nothing and fails nothing
    tables = set(inspect(engine).get_table_names())
    assert {"incidents", "role_assignments", "timeline_events", "alembic_version"} <= tables


def test_sqlite_runs_with_wal_and_foreign_keys(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_declaration_records_incident_ic_and_timeline(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        incident = _declare(session, severity=Severity.SEV2, is_private=True)
    with Session(engine) as session:
        stored = lifecycle.require_incident(session, "C100")
        assert stored.severity == "SEV2" and stored.status == "investigating"
        assert stored.is_private and stored.declared_at == T0
        assert stored.declared_at.tzinfo is not None
        assert stored.holder("ic") == "UALICE"
        kinds = [e.kind for e in timeline.events_for(session, incident.id)]
        assert kinds == ["declared", "channel_created", "role_assigned"]


def test_ic_handoff_relieves_the_previous_holder(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        incident = _declare(session)
        change = lifecycle.assign_role(session, incident, Role.IC, "UBOB", "UALICE",
                                       T0 + timedelta(minutes=3))
        assert (change.old, change.new, change.changed) == ("UALICE", "UBOB", True)
        again = lifecycle.assign_role(session, incident, Role.IC, "UBOB", "UALICE")
        assert not again.changed
    with Session(engine) as session:
        rows = session.scalars(select(RoleAssignment).order_by(RoleAssignment.id)).all()
        assert [(r.user_id, r.relieved_at is None) for r in rows] == [
            ("UALICE", False), ("UBOB", True)]
        handoff = session.scalars(select(TimelineEvent).where(
            TimelineEvent.kind == EventKind.IC_HANDOFF.value)).one()
        assert "<@UBOB> is now the incident commander" in handoff.text
        assert handoff.data == {"role": "ic", "user": "UBOB", "previous": "UALICE"}


def test_one_current_holder_per_role_is_enforced_by_the_database(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        incident = _declare(session)
        incident_id = incident.id
    with pytest.raises(IntegrityError), Session(engine) as session, session.begin():
        session.add(RoleAssignment(incident_id=incident_id, role="ic", user_id="UBOB",
                                   assigned_by="UBOB", assigned_at=T0))


def test_severity_and_status_changes_are_stamped_and_recorded(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        incident = _declare(session)
        lifecycle.change_severity(session, incident, Severity.SEV1, "UBOB", T0)
        lifecycle.change_status(session, incident, Status.MITIGATED, "UBOB",
                                T0 + timedelta(minutes=20))
        with pytest.raises(InvalidTransition):
            lifecycle.change_status(session, incident, Status.CLOSED, "UBOB")
    with Session(engine) as session:
        stored = lifecycle.require_incident(session, "C100")
        assert stored.severity == "SEV1"
        assert stored.mitigated_at == T0 + timedelta(minutes=20)
        texts = [e.text for e in timeline.events_for(session, stored.id)]
        assert "Severity changed from SEV3 to SEV1" in texts
        assert "Status changed from Investigating to Mitigated" in texts


def test_timeline_dedupe_key_makes_recording_idempotent(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        incident = _declare(session)
        first = timeline.record(session, incident.id, EventKind.MESSAGE, "hi",
                                dedupe_key="msg:1.000100")
        second = timeline.record(session, incident.id, EventKind.MESSAGE, "hi",
                                 dedupe_key="msg:1.000100")
        assert first is not None and second is None
    with Session(engine) as session:
        assert len(session.scalars(select(TimelineEvent).where(
            TimelineEvent.dedupe_key == "msg:1.000100")).all()) == 1


def test_lookups_outside_an_incident_channel(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session, session.begin():
        _declare(session, "C1")
        _declare(session, "C2", severity=Severity.SEV1)
        with pytest.raises(NotAnIncidentChannel):
            lifecycle.require_incident(session, "CGENERAL")
        assert [i.channel_id for i in lifecycle.list_open(session)] == ["C2", "C1"]
