"""spool positions: how far a worker has moved its serving process's spool into the inbox

A serving process on SQLite stores each request with work in one append to a spool file
before Slack gets its answer; its worker moves the records into the inbox and remembers here,
in the same transaction, where the next record starts.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spool_positions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("file", sa.Integer(), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spool_positions")),
    )


def downgrade() -> None:
    op.drop_table("spool_positions")
