"""Alembic migrations, shipped as a package so the installed service finds them.

app.db.engine.alembic_config() points Alembic's script_location at this
directory; `python -m migrations ...` is the alembic command line without an ini file.
"""
