"""Tracks and statuses keep whether a track was heard from its start, as the daemon tells it
since protocol 1.5 (an Ogg link's first page says where listening began; MP3 and AAC say
nothing): the as-run log then marks a track "joined" by what the source knew rather than by
its place in the session. Nullable columns, empty for rows recorded before, from daemons
before 1.5 and where the source did not know.

It also adds silences.cause where it is missing: revision 0003 gained that column after
databases had been made with it (by streamtag between the silences' arrival and the stuck
tone's), and those kept a silences table without it, where no silence could be stored.

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
    silences = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("silences")}
    if "cause" not in silences:
        with op.batch_alter_table("silences") as batch:
            batch.add_column(sa.Column("cause", sa.String(16), nullable=False,
                                       server_default="silence"))
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("heard_from_start", sa.Boolean, nullable=True))


def downgrade():  # silences.cause stays: revision 0003 has it
    for table in reversed(TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("heard_from_start")
