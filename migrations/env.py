"""Alembic environment: online migrations with a sync psycopg 3 engine.

The URL comes from, in order: ``alembic -x url=...``; a programmatic ``sqlalchemy.url`` attribute or main
option (:mod:`common.db.migrate`, tests); the settings (``DATABASE_URL`` / ``DATABASE__URL``).
A caller may also hand over an open connection as ``config.attributes["connection"]``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from common.config import get_settings
from common.db.models import Base
from common.db.session import make_sync_engine, normalize_url

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.attributes.get("sqlalchemy.url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().database.url
    )
    if not url:
        raise RuntimeError(
            "no database URL: pass -x url=..., set DATABASE_URL, or use common.db.migrate with a URL"
        )
    return normalize_url(str(url))


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade --sql``)."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        compare_type=True,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through a live connection (the caller's, or a new sync engine's)."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_sync_engine(_database_url())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
