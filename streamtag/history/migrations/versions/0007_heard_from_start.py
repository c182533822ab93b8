"""Tracks and statuses keep whether a track was heard from its start, as the daemon tells it
since protocol 1.5 (an Ogg link's first page says where listening began; MP3 and AAC say
nothing): the as-run log then marks a track "joined" by what the source knew rather than by
its place in the session. Nullable columns, empty for rows recorded before, from daemons
before 1.5 and where the source did not know.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("statuses", "tracks")


def upgrade():
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("heard_from_start", sa.Boolean, nullable=True))


def downgrade():
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("heard_from_start")
