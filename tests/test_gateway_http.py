"""The gateway's HTTP: each thread keeps its connection to Slack open, replaces one the
server closed, and still answers errors as slack_sdk's retry handlers expect."""

from __future__ import annotations

import logging
import threading

import pytest

from incidentbot.slack.gateway import SlackCallFailed, SlackGateway, build_client
from tests.conftest import BOT_TOKEN
from tests.fakeslack import FakeSlack
from tests.helpers import eventually


def _gateway(fake: FakeSlack) -> SlackGateway:
    return SlackGateway(build_client(BOT_TOKEN, fake.api_url))


def test_calls_from_one_thread_share_one_connection(fake: FakeSlack) -> None:
    gateway = _gateway(fake)
    channel = gateway.create_channel("inc-keepalive", is_private=False)
    for n in range(5):
        gateway.post_message(channel.id, f"update {n}")
    assert len(fake.calls) == 6
    assert fake.connections_accepted == 1


def test_each_thread_has_its_own_connection(fake: FakeSlack) -> None:
    gateway = _gateway(fake)
    threads = [threading.Thread(target=lambda: [gateway.bot_user_id() for _ in range(3)])
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(fake.calls_to("auth.test")) == 9
    assert fake.connections_accepted == 3


def test_a_connection_the_server_closed_while_idle_is_replaced_before_use(
    fake: FakeSlack, caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = _gateway(fake)
    gateway.bot_user_id()
    fake.close_idle_connections()
    eventually(lambda: fake.open_connections() == 0)
    with caplog.at_level(logging.INFO):
        assert gateway.bot_user_id() == fake.bot_user_id
    assert fake.connections_accepted == 2
    assert len(fake.calls_to("auth.test")) == 2
    assert not [r for r in caplog.records if "Failed to send" in r.getMessage()
                or "retry" in r.getMessage().lower()]


def test_error_answers_keep_the_connection_and_are_retried(fake: FakeSlack) -> None:
    gateway = _gateway(fake)
    fake.fail_next("auth.test", status=429, retry_after=0)
    fake.fail_next("chat.postMessage", "internal_error", status=500)
    assert gateway.bot_user_id() == fake.bot_user_id
    channel = gateway.create_channel("inc-errors", is_private=False)
    gateway.post_message(channel.id, "after a 500")
    with pytest.raises(SlackCallFailed) as failed:
        gateway.post_message("CNOSUCH", "nowhere")
    assert failed.value.error == "channel_not_found"
    assert [m for m, _ in fake.calls].count("auth.test") == 2
    assert [m for m, _ in fake.calls].count("chat.postMessage") == 3
    assert fake.connections_accepted == 1


def test_a_reset_connection_is_retried_on_a_new_one(fake: FakeSlack) -> None:
    gateway = _gateway(fake)
    gateway.bot_user_id()
    fake.fail_next("auth.test", reset_connection=True)
    assert gateway.bot_user_id() == fake.bot_user_id
    assert fake.connections_accepted == 2


def test_slack_unreachable_is_a_connection_error(fake: FakeSlack) -> None:
    gateway = _gateway(fake)
    gateway.bot_user_id()
    fake.stop()
    with pytest.raises(SlackCallFailed) as failed:
        gateway.bot_user_id()
    assert failed.value.error == "connection_error"
