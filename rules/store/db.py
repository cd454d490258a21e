"""Database connection and schema migrations.

SQLite (WAL) is the embedded default; PostgreSQL is used for a ``postgresql://`` URL. The schema is
created and upgraded by the Alembic migrations beside this file, never by ``create_all``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, event
from sqlmodel import create_engine

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

# WAL size, in pages, at which a commit copies the WAL into the database file itself. The
# pipeline runs checkpoints beside its writes (checkpoint_wal), so this only limits the WAL, to
# about 40 MB with 4 KiB pages, when those fall behind or no pipeline runs. With SQLite's
# default of 1000 pages, a commit of the replay benchmark ran a checkpoint every third batch.
WAL_AUTOCHECKPOINT_PAGES = 10_000


def _set_sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs, and create the folder of a SQLite file."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return url


def connect(url: str) -> Engine:
    """Open the database at ``url`` and bring its schema up to the newest migration."""
    engine = create_engine(normalise_url(url))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _set_sqlite_pragmas)
    upgrade(engine)
    return engine


def checkpoint_wal(engine: Engine) -> None:
    """Copy committed WAL pages of a SQLite database into the database file (a PASSIVE checkpoint).

    A PASSIVE checkpoint waits for no reader or writer, so it can run beside the writing
    thread. Otherwise the commit that finds the WAL past ``wal_autocheckpoint`` pages copies it
    itself: in the replay benchmark (tests/bench_hub.py, 2 cores) commits took about 6 us per
    reading with SQLite's default of 1000 pages, about 3.4 us with WAL_AUTOCHECKPOINT_PAGES, and
    about 2 us with that and these checkpoints. A failure is logged and left to the automatic
    checkpoint.
    """
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
    except Exception as error:
        logger.warning("WAL checkpoint of %s failed: %s", engine.url.render_as_string(hide_password=True), error)


def upgrade(engine: Engine) -> None:
    alembic_config = AlembicConfig()
    alembic_config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        alembic_config.attributes["connection"] = connection
        command.upgrade(alembic_config, "head")
    logger.debug("schema is at the newest migration on %s", engine.url.render_as_string(hide_password=True))
