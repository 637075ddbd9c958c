"""The database going away: commands say so, events are not acknowledged, and a message
sent while it was down is stored once Slack redelivers it after the database is back."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from incidentbot.models import TimelineEvent
from tests.conftest import (
    ALICE,
    BOB,
    RunningBot,
    _fresh_postgres_schema,
    bot_running,
    make_settings,
)
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.tcpproxy import TcpProxy
from tests.test_declare_e2e import answer, declare


def probe(running: RunningBot, path: str) -> int:
    try:
        with urllib.request.urlopen(f"{running.url}{path}", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture
def proxied_postgres(postgres_admin_url: str) -> Iterator[tuple[str, TcpProxy]]:
    """A fresh PostgreSQL schema reached through a proxy the test can cut."""
    for url in _fresh_postgres_schema(postgres_admin_url):
        parsed = make_url(url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        try:
            yield parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(
                hide_password=False), proxy
        finally:
            proxy.close()


def test_database_outage_loses_nothing(
    proxied_postgres: tuple[str, TcpProxy], fake: FakeSlack
) -> None:
    url, proxy = proxied_postgres
    with bot_running(make_settings(url, fake), fake) as running:
        incident = declare(running, "Database outage")
        driver, channel = running.driver, incident.channel_id
        proxy.cut()
        assert probe(running, "/livez") == 200  # the process is fine: no restart
        assert eventually(lambda: probe(running, "/readyz") == 503)  # but not ready
        driver.command("note failing over", user_id=ALICE, channel_id=channel)
        told = answer(running, driver.last_response_url, "can't record this right now")
        assert "Traceback" not in told
        event = driver.message_event(channel, BOB, "sent while the database was down",
                                     ts="1900000100.000100")
        first = driver.event(event, event_id="Ev0DBDOWN")
        assert first.status >= 500  # not acknowledged: Slack will deliver it again
        proxy.restore()
        retry = driver.event(event, event_id="Ev0DBDOWN", timestamp=int(time.time()) + 1,
                             headers={"X-Slack-Retry-Num": "1",
                                      "X-Slack-Retry-Reason": "http_error"})
        assert retry.status == 200

        def stored() -> list[str]:
            with running.session() as session:
                return list(session.scalars(select(TimelineEvent.text).where(
                    TimelineEvent.incident_id == incident.id,
                    TimelineEvent.kind == "message")))

        assert eventually(stored) == ["sent while the database was down"]
        driver.command("note failing over", user_id=ALICE, channel_id=channel)
        answer(running, driver.last_response_url, "Noted as a key event")


def test_a_database_restart_between_requests_costs_no_answer(
    proxied_postgres: tuple[str, TcpProxy], fake: FakeSlack
) -> None:
    """Every connection is cut while the bot is idle; the next message finds its pooled
    connection dead before anything was committed, and is stored on a new one."""
    url, proxy = proxied_postgres
    with bot_running(make_settings(url, fake), fake) as running:
        incident = declare(running, "Restart between requests")
        time.sleep(0.5)  # idle
        proxy.cut()
        proxy.restore()
        event = running.driver.message_event(incident.channel_id, BOB, "after the restart",
                                             ts="1900000200.000100")
        assert running.driver.event(event).status == 200
        with running.session() as session:
            assert list(session.scalars(select(TimelineEvent.text).where(
                TimelineEvent.incident_id == incident.id,
                TimelineEvent.kind == "message"))) == ["after the restart"]
