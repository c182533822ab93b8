"""Scores keep their window's EBU R128 loudness (protocol 1.3's ``momentary_lufs`` and
``short_term_lufs``, from daemons with ``[health] loudness`` on): nullable columns, empty for
scores recorded before and for daemons that do not measure it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (("momentary_lufs", sa.Float), ("short_term_lufs", sa.Float))


def upgrade():
    with op.batch_alter_table("scores") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade():
    with op.batch_alter_table("scores") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
