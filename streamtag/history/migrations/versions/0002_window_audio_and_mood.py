"""Scores keep their window's audio level and the stream's mood (protocol 1.2): nullable
columns, empty for scores recorded before and for daemons that publish neither.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = (("rms_dbfs", sa.Float), ("peak_dbfs", sa.Float), ("clipped", sa.BigInteger),
           ("onset_rate_hz", sa.Float), ("energy", sa.Float), ("mood", sa.Text),
           ("valence", sa.Float), ("arousal", sa.Float))


def upgrade():
    with op.batch_alter_table("scores") as batch:
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade():
    with op.batch_alter_table("scores") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
