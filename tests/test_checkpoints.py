"""SQLite checkpoints stay off the serving process's commits (incidentbot/db.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from incidentbot.db import CHECKPOINT_EVERY_S, Checkpointer, create_db_engine
from tests.conftest import ALICE, BOT_TOKEN, SIGNING_SECRET
from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.process import BotProcess, bot_env
from tests.test_inbox_e2e import channel_named

ROW = "x" * 2000
ROWS = 3000  # about 6 MB: SQLite's automatic checkpoint runs at 1000 pages (4 MB)


def write_rows(engine: Engine, count: int = ROWS) -> None:
    """One commit per row, as the ack path does."""
    for _ in range(count):
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO t (body) VALUES (?)", (ROW,))


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints.db"
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    engine.dispose()  # the last connection to close checkpoints the table into the file
    return path


@pytest.mark.parametrize("checkpoints", [True, False])
def test_commits_checkpoint_only_where_checkpoints_are_kept(
        database: Path, checkpoints: bool) -> None:
    before = database.stat().st_size
    engine = create_db_engine(f"sqlite:///{database}", checkpoints=checkpoints)
    write_rows(engine)
    grown = database.stat().st_size - before
    wal = Path(f"{database}-wal").stat().st_size
    engine.dispose(close=False)  # keep the log: closing would checkpoint it
    if checkpoints:
        assert grown > 2_000_000  # the commits copied the log into the file
    else:
        assert grown == 0  # every row is still only in the log
        assert wal > ROWS * len(ROW)


def test_a_checkpointer_copies_what_other_processes_left_in_the_log(database: Path) -> None:
    serving = create_db_engine(f"sqlite:///{database}", checkpoints=False)
    write_rows(serving)
    before = database.stat().st_size
    worker_engine = create_db_engine(f"sqlite:///{database}")
    checkpointer = Checkpointer([worker_engine], interval_s=0.05)
    checkpointer.start()
    try:
        eventually(lambda: database.stat().st_size - before > ROWS * len(ROW))
    finally:
        checkpointer.stop()
        serving.dispose(close=False)
        worker_engine.dispose(close=False)


def test_app_py_worker_process_checkpoints_what_its_server_stores(tmp_path: Path) -> None:
    """`python app.py`: channel messages, stored by the serving process before each answer,
    reach the database file through the worker process's checkpoints."""
    path = tmp_path / "incidentbot.db"
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.add_user(ALICE, "alice")
        bot = BotProcess(bot_env(fake.api_url, f"sqlite:///{path}")).start()
        try:
            driver = SlackDriver(f"{bot.url}/slack/events", SIGNING_SECRET, fake)
            driver.command("declare Checkpoints", user_id=ALICE, channel_id="CGENERAL")
            channel = eventually(lambda: channel_named(fake, "checkpoints"))
            eventually(lambda: fake.pins(channel))  # the worker has written the declaration
            before = path.stat().st_size
            for i in range(600):
                response = driver.event(driver.message_event(channel, ALICE, f"{i} {ROW}"))
                assert response.status == 200
            eventually(lambda: path.stat().st_size - before > 600 * len(ROW),
                       timeout=CHECKPOINT_EVERY_S + 15)
        finally:
            bot.stop()
