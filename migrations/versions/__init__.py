"""Date-named Alembic revisions (Alembic skips this file)."""
