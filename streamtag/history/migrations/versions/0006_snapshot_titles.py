"""Snapshots keep each stream's source state, title and source as the daemon's ``snapshot``
reply gives them: a recorder started in the middle of a track then knows its title (the
``running`` status that carried it was published before the recorder listened). Nullable
columns, empty for snapshots recorded before and from daemons that do not send them.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (("state", sa.String(16)), ("title", sa.Text), ("source", sa.Text))


def upgrade():
    with op.batch_alter_table("snapshots") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade():
    with op.batch_alter_table("snapshots") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
