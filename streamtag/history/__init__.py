"""History: ``streamtag record`` writes what daemons publish to a database (SQLite or
PostgreSQL, through SQLAlchemy Core), and ``streamtag history`` and the dashboard read it.

schema.py holds the tables and the schema versions (Alembic migrations in migrations/),
recorder.py the recorder, report.py the queries and the history command, plot.py the timeline.
"""
