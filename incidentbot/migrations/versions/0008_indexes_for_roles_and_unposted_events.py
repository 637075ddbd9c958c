"""indexes for an incident's roles and for unposted bot events

Loading an incident loads its role assignments (`lazy="selectin"`), and the only index on
`role_assignments` was the partial unique one on current holders, which a lookup by
incident cannot use: every load scanned every assignment ever made. Finding reminders a
crash left unconfirmed scanned the whole timeline.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 23:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UNPOSTED = sa.text("slack_ts IS NULL")


def upgrade() -> None:
    op.create_index("ix_role_assignments_incident_id", "role_assignments", ["incident_id"])
    op.create_index("ix_timeline_events_unposted", "timeline_events", ["kind"],
                    sqlite_where=UNPOSTED, postgresql_where=UNPOSTED)


def downgrade() -> None:
    op.drop_index("ix_timeline_events_unposted", table_name="timeline_events")
    op.drop_index("ix_role_assignments_incident_id", table_name="role_assignments")
