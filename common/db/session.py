"""Engines and sessions: one async engine per process for the app, a sync engine for Alembic and admin.

psycopg 3 serves both: a ``postgresql+psycopg://`` URL works with :func:`create_engine` and
:func:`create_async_engine` alike, so one URL configures everything.

Connection failures surface as :class:`common.errors.DatabaseUnavailable` (retryable) from
:func:`session_scope`; constraint violations and programming errors are left alone, they are not transient.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from common.errors import DatabaseUnavailable

_PLAIN_SCHEMES = ("postgres", "postgresql")
DRIVER_SCHEME = "postgresql+psycopg"


def normalize_url(url: str) -> str:
    """Return ``url`` with the psycopg 3 driver: ``postgres(ql)://`` → ``postgresql+psycopg://``.

    URLs naming another driver explicitly are returned unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("not a database URL (no scheme)")
    if scheme in _PLAIN_SCHEMES:
        return f"{DRIVER_SCHEME}://{rest}"
    return url


def redact_url(url: str) -> str:
    """The URL with its password hidden, for logs and error messages."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> AsyncEngine:
    """Async engine for the app; ``pool_pre_ping`` drops connections a Postgres restart killed."""
    return create_async_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        echo=echo,
    )


def make_sync_engine(url: str, *, echo: bool = False) -> Engine:
    """Sync engine for Alembic, admin scripts and tests (small pool: these are short-lived)."""
    return create_engine(normalize_url(url), pool_size=1, max_overflow=2, pool_pre_ping=True, echo=echo)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory; ``expire_on_commit=False``: expired attributes cannot lazy-load under asyncio."""
    return async_sessionmaker(engine, expire_on_commit=False)


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean "the database is unreachable or the connection broke" (retryable)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@asynccontextmanager
async def session_scope(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit when the block succeeds, roll back when it raises.

    Connection errors are re-raised as :class:`DatabaseUnavailable`; everything else propagates unchanged.
    """
    try:
        async with sessionmaker() as session, session.begin():
            yield session
    except DBAPIError as exc:
        if is_connection_error(exc):
            details = {"error": type(exc.orig).__name__}
            raise DatabaseUnavailable("database unavailable", details=details) from exc
        raise
