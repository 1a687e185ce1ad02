"""Run the Alembic migrations from Python (the launcher and the tests use this, not the CLI)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from common.db.session import normalize_url

_REPO_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` that works whatever the current directory is."""
    ini = _REPO_ROOT / "alembic.ini"
    config = Config(str(ini)) if ini.is_file() else Config()
    config.set_main_option("script_location", str(_REPO_ROOT / "migrations"))
    # Passed as an attribute, not a main option: ConfigParser would treat a '%' in a password as syntax.
    config.attributes["sqlalchemy.url"] = normalize_url(url)
    # The caller already configured logging; alembic.ini's fileConfig would replace it.
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops everything)."""
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    from common.db.session import make_sync_engine

    engine = make_sync_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
