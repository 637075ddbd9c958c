"""Fixtures: databases (SQLite file and real PostgreSQL), the fake Slack, and a running bot."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from incidentbot.config import Settings, load_settings
from incidentbot.db import create_db_engine, migrate, normalize_url
from incidentbot.server import Bot, create_bot, make_http_server, stop_http_server
from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ALICE, BOB, CAROL = "UALICE", "UBOB", "UCAROL"
ACK_LIMIT_S = 3.0  # Slack's deadline for acknowledging any request


def postgres_url() -> str:
    return normalize_url(os.environ.get("TEST_DATABASE_URL", PG_DEFAULT))


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The PostgreSQL server to test on; CI fails (never skips) when it is unreachable."""
    url = postgres_url()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        if os.environ.get("CI"):
            raise RuntimeError(f"PostgreSQL is required in CI and is unreachable at {url}") from exc
        pytest.skip(f"PostgreSQL unreachable at {url}")
    finally:
        engine.dispose()
    return url


def _fresh_postgres_schema(admin_url: str) -> Iterator[str]:
    """A private schema per test, selected through the connection's search_path."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database test runs on a fresh SQLite file and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'incidentbot.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    yield from _fresh_postgres_schema(admin_url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on the test's fresh database."""
    engine = create_db_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated engine on a fresh SQLite file (tests of SQLite's own behaviour)."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack(bot_token=BOT_TOKEN)
    slack.start()
    for user_id, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")):
        slack.add_user(user_id, name)
    slack.add_user("UOTHERBOT", "otherbot", is_bot=True)
    yield slack
    slack.stop()


def make_settings(database_url: str, fake: FakeSlack, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "slack_bot_token": BOT_TOKEN,
        "slack_signing_secret": SIGNING_SECRET,
        "slack_app_token": "",
        "slack_api_url": fake.api_url,
        "database_url": database_url,
        "host": "127.0.0.1",
        "port": 0,
        "broadcast_channel": "",
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class RunningBot:
    bot: Bot
    driver: SlackDriver
    fake: FakeSlack
    url: str

    def session(self) -> Session:
        return Session(self.bot.engine)


@pytest.fixture
def bot_settings() -> dict[str, object]:
    """Override settings for the `running` bot in a test module or test."""
    return {}


@pytest.fixture
def running(
    database_url: str, fake: FakeSlack, bot_settings: dict[str, object]
) -> Iterator[RunningBot]:
    """The real bot behind a real HTTP server on loopback, talking to the fake Slack."""
    with bot_running(make_settings(database_url, fake, **bot_settings), fake) as bot:
        yield bot


@contextmanager
def bot_running(settings: Settings, fake: FakeSlack) -> Iterator[RunningBot]:
    """Start the bot with these settings; on exit stop it and check every ack was fast."""
    bot = create_bot(settings)
    server = make_http_server(bot, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    driver = SlackDriver(f"{url}/slack/events", SIGNING_SECRET, fake)
    yield RunningBot(bot=bot, driver=driver, fake=fake, url=url)
    stop_http_server(server)
    thread.join(timeout=5)
    bot.close()
    slowest = max(driver.latencies, default=0.0)
    assert slowest < ACK_LIMIT_S, f"a request took {slowest:.2f}s to be acknowledged"
