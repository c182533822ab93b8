"""History: ``streamtag record`` writes what daemons publish to a database (SQLite or
PostgreSQL, through SQLAlchemy Core), and ``streamtag history`` and the dashboard read it.

schema.py holds the tables and the schema versions (Alembic migrations in migrations/),
blocks.py the packed windows (their format, rollups, and the one way readers read windows),
retention.py what expires when, tiers.py whether a report reads windows or rollups (and the
rollups' readers), recorder.py the recorder, report.py the queries and their
text forms, plot.py the timeline (it reads report's `History`; report never imports it),
metrics.py the recorder's Prometheus metrics. The commands are streamtag.commands.record
and streamtag.commands.history.
"""
