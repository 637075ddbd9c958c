"""ORM tables (SQLAlchemy 2 typed mappings). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from incidentbot.core.severity import Severity


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Incident(Base):
    """One declared incident and the Slack objects that belong to it."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    service: Mapped[str] = mapped_column(String(120), default="")
    severity: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20), index=True)
    is_private: Mapped[bool] = mapped_column(Boolean, default=False)
    is_drill: Mapped[bool] = mapped_column(Boolean, default=False)
    team_id: Mapped[str] = mapped_column(String(32), default="")
    channel_id: Mapped[str] = mapped_column(String(32), unique=True)
    channel_name: Mapped[str] = mapped_column(String(80))
    card_ts: Mapped[str | None] = mapped_column(String(32))
    topic: Mapped[str | None] = mapped_column(String(250))  # as last set in Slack
    declared_by: Mapped[str] = mapped_column(String(32))
    declared_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    identified_at: Mapped[datetime | None]
    mitigated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    next_update_due_at: Mapped[datetime | None]
    last_update_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    resolution_summary: Mapped[str] = mapped_column(Text, default="")
    root_cause: Mapped[str] = mapped_column(Text, default="")
    customer_impact: Mapped[str] = mapped_column(Text, default="")
    follow_up_needed: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_by: Mapped[str | None] = mapped_column(String(32))
    postmortem_due_at: Mapped[datetime | None]
    # The request that declared it (e.g. a modal's view id) so a redelivery declares once.
    request_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    alert_group_key: Mapped[str | None] = mapped_column(String(200), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    roles: Mapped[list[RoleAssignment]] = relationship(
        back_populates="incident", order_by="RoleAssignment.id", lazy="selectin"
    )

    def holder(self, role: str) -> str | None:
        """The user currently holding `role`, if anyone."""
        for assignment in self.roles:
            if assignment.role == role and assignment.relieved_at is None:
                return assignment.user_id
        return None

    @property
    def severity_enum(self) -> Severity:
        return Severity(self.severity)

    def current_roles(self) -> dict[str, str]:
        return {a.role: a.user_id for a in self.roles if a.relieved_at is None}


class RoleAssignment(Base):
    """Who held which role, from when until when; at most one current holder per role."""

    __tablename__ = "role_assignments"
    __table_args__ = (
        Index(
            "uq_role_assignments_current",
            "incident_id",
            "role",
            unique=True,
            sqlite_where=text("relieved_at IS NULL"),
            postgresql_where=text("relieved_at IS NULL"),
        ),
        # Loading an incident loads its roles: without this, a scan of every assignment ever
        Index("ix_role_assignments_incident_id", "incident_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[str] = mapped_column(String(32))
    assigned_by: Mapped[str] = mapped_column(String(32))
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)
    relieved_at: Mapped[datetime | None]

    incident: Mapped[Incident] = relationship(back_populates="roles")


class TimelineEvent(Base):
    """One entry of an incident's timeline: a channel message or something the bot did.

    `dedupe_key` makes recording idempotent (e.g. `msg:<ts>` for a channel message), so a
    redelivered Slack event never makes a second row.
    """

    __tablename__ = "timeline_events"
    __table_args__ = (
        UniqueConstraint("incident_id", "dedupe_key", name="uq_timeline_events_dedupe"),
        Index("ix_timeline_events_incident_time", "incident_id", "occurred_at"),
        # Bot events not (yet) posted, e.g. reminders a crash left unconfirmed; channel
        # messages always have a ts, so ingest never writes to this index
        Index("ix_timeline_events_unposted", "kind",
              sqlite_where=text("slack_ts IS NULL"), postgresql_where=text("slack_ts IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, default="")
    slack_ts: Mapped[str | None] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    is_key: Mapped[bool] = mapped_column(Boolean, default=False)
    edited_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    dedupe_key: Mapped[str | None] = mapped_column(String(120))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class StatusUpdate(Base):
    """A status update posted in the seeds' format (`[SEV2] - [service] - [Mitigated]`)."""

    __tablename__ = "status_updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    author_id: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20))
    impact: Mapped[str] = mapped_column(Text, default="")
    current_action: Mapped[str] = mapped_column(Text, default="")
    eta: Mapped[str] = mapped_column(String(200), default="")
    next_update_at: Mapped[datetime | None]
    posted_at: Mapped[datetime] = mapped_column(default=utcnow)
    message_ts: Mapped[str | None] = mapped_column(String(32))
    request_key: Mapped[str | None] = mapped_column(String(120), unique=True)


class ActionItem(Base):
    """A follow-up task with an owner, a due date and a priority (P0 most urgent)."""

    __tablename__ = "action_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(Text)
    owner_id: Mapped[str] = mapped_column(String(32))
    due_date: Mapped[date] = mapped_column(Date)
    priority: Mapped[str] = mapped_column(String(2), default="P2")
    status: Mapped[str] = mapped_column(String(10), default="open", index=True)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
    done_by: Mapped[str | None] = mapped_column(String(32))
    request_key: Mapped[str | None] = mapped_column(String(120), unique=True)


class Postmortem(Base):
    """A rendered postmortem draft (each regeneration is kept) and its uploaded file."""

    __tablename__ = "postmortems"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    markdown: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(32))
    file_id: Mapped[str | None] = mapped_column(String(32))


class SeenRequest(Base):
    """Signatures of accepted Slack requests, kept a few minutes to refuse replays."""

    __tablename__ = "seen_requests"

    signature: Mapped[str] = mapped_column(String(100), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Job(Base):
    """Work that follows an acknowledged Slack request: one lazy listener to run.

    Committed before Slack gets its answer (`incidentbot.jobs`). A runner claims it with a
    lease, runs it and marks it `done`; a job that raises is tried again later and, after
    its last attempt, kept as `failed` with its error for an admin to look at.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_ready", "state", "priority", "run_after"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(120), unique=True)
    function: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(20), default="http")
    priority: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class Page(Base):
    """Paging a service's on-call: primary, then secondary, then manager until acknowledged."""

    __tablename__ = "pages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    service: Mapped[str] = mapped_column(String(120))
    path: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"steps": [[user, ...], ...]}
    step: Mapped[int] = mapped_column(Integer, default=0)
    paged_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_escalation_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(32))
