"""Statuses keep the station's name (protocol 1.2's status ``station``, from the server's
``icy-name`` or ``ice-name``): a nullable column, empty for statuses recorded before and for
sources that name no station.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("statuses") as batch:
        batch.add_column(sa.Column("station", sa.Text, nullable=True))


def downgrade():
    with op.batch_alter_table("statuses") as batch:
        batch.drop_column("station")
