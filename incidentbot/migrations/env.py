"""Alembic environment: runs on the connection handed over by `incidentbot.db.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from incidentbot.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as own_connection:
        _run(own_connection)


def _include(obj: object, name: str | None, type_: str, *_args: object) -> bool:
    """APScheduler manages its own job table; migrations leave it alone."""
    return not (type_ == "table" and name == "apscheduler_jobs")


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        include_object=_include,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
