"""Scores keep what their window's audio was (protocol 1.7's ``content``: music, speech,
silence, tone or noise): a nullable column, empty for scores recorded before and for daemons
whose ``[content]`` is off.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("content", sa.String(16), nullable=True))


def downgrade():
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("content")
