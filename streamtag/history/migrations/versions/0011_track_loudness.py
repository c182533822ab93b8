"""Tracks keep their EBU R128 integrated loudness, as the daemon measures it on the track's
own audio since protocol 1.10: the as-run log then reports BS.1770's gated loudness itself
rather than one estimated from the windows' 3 s readings (which read speech and dynamic piano
1.5-2.2 LU low). A nullable column, empty for rows recorded before, from daemons before 1.10
and where the daemon did not measure loudness.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("tracks") as batch:
        batch.add_column(sa.Column("loudness_lufs", sa.Float, nullable=True))


def downgrade():
    with op.batch_alter_table("tracks") as batch:
        batch.drop_column("loudness_lufs")
