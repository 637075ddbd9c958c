"""Engine, sessions and migrations. SQLite gets WAL and foreign keys; PostgreSQL via psycopg 3."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from incidentbot.sqlite_writers import WriterTurns

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x1_2C1D_0001
SQLITE_BUSY_S = 30
# Each checkpoint syncs both files, and while the file system commits that, a write of the
# serving process stalls ~1 ms (ext4 here): every second, that put answers at 100/s over 1 ms
# 13 times in 20 s; every 10 s, never. The log then holds up to 10 s of writes.
CHECKPOINT_EVERY_S = 10.0

log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain `postgresql://` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, checkpoints: bool = True) -> Engine:
    """An engine with the pragmas and pool settings the bot relies on.

    On SQLite a commit that finds the write-ahead log over 1000 pages copies it into the
    database and syncs the file (a checkpoint), before it returns. `checkpoints=False` leaves
    that to another process (`Checkpointer`): the serving process's commits, which answers
    to Slack wait on, then only append to the log.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_S,
                                                  "check_same_thread": False})

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, checkpoints=checkpoints)

        event.listen(engine, "connect", on_connect)
        database = sqlite_file(url)
        WriterTurns(SQLITE_BUSY_S, f"{database}.writers" if database else None).attach(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def engine_file(engine: Engine) -> str | None:
    """The file of an SQLite engine's database (see `sqlite_file`)."""
    return sqlite_file(engine.url.render_as_string(hide_password=False))


def sqlite_file(url: str) -> str | None:
    """The file of an SQLite URL; None for in-memory SQLite and other databases."""
    parsed = make_url(normalize_url(url))
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or \
            "mode=memory" in url:
        return None
    return database


def _sqlite_pragmas(dbapi_connection: Any, *, checkpoints: bool) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    if not checkpoints:
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_S * 1000}")
    cursor.close()


def checkpoint(engine: Engine) -> None:
    """Copy an SQLite engine's write-ahead log into the database file. PASSIVE: it neither
    waits for nor blocks the readers and writers of other processes."""
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


class Checkpointer:
    """Checkpoints SQLite databases every `interval_s`, in a thread: a worker process does it
    for the serving process, whose engines leave it (`create_db_engine(checkpoints=False)`)."""

    def __init__(self, engines: Sequence[Engine], interval_s: float = CHECKPOINT_EVERY_S) -> None:
        self._engines = list(engines)  # SQLite engines with a file
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            for engine in self._engines:
                try:
                    checkpoint(engine)
                except SQLAlchemyError as exc:
                    log.warning("Checkpoint of %s failed: %s", engine.url.database,
                                type(exc).__name__)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with sessions.begin() as session:
        yield session


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    url = engine.url.render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser escaping
    return config


def migrate(engine: Engine) -> None:
    """Apply every pending Alembic migration (run at start-up)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # replicas starting together: one at a time
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def ping(engine: Engine) -> None:
    """Raise if the database cannot be reached."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
