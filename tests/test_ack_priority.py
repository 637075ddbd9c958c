"""Background work steps aside while Slack's requests are being answered."""

from __future__ import annotations

import threading
from collections.abc import Callable

from incidentbot.ack_priority import AckPriority
from incidentbot.slack.gateway import SlackGateway, build_client
from tests.conftest import ALICE, BOT_TOKEN, RunningBot
from tests.fakeslack import FakeSlack


def _run(priority: AckPriority, *, background: bool) -> tuple[threading.Thread, threading.Event]:
    """A thread that calls `step_aside` and then sets the returned event."""
    passed = threading.Event()

    def body() -> None:
        if background:
            priority.mark_background()
        priority.step_aside()
        passed.set()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, passed


def test_background_work_waits_until_the_answer_has_left() -> None:
    priority = AckPriority(max_wait_s=60)
    with priority.answering():
        thread, passed = _run(priority, background=True)
        assert not passed.wait(0.3), "background work went ahead of a request being answered"
    assert passed.wait(5), "background work stayed stuck after the answer left"
    thread.join(5)


def test_the_wait_is_bounded_so_a_steady_stream_of_requests_cannot_starve_work() -> None:
    priority = AckPriority(max_wait_s=0.05)
    with priority.answering():
        _, passed = _run(priority, background=True)
        assert passed.wait(5), "background work waited beyond its bound"


def test_request_threads_and_others_never_wait() -> None:
    priority = AckPriority(max_wait_s=60)
    with priority.answering(), priority.answering():
        _, passed = _run(priority, background=False)
        assert passed.wait(5), "a thread not marked as background stepped aside"


def test_nested_answers_hold_work_until_the_last_one_leaves() -> None:
    priority = AckPriority(max_wait_s=60)
    with priority.answering():
        with priority.answering():
            _, passed = _run(priority, background=True)
        assert not passed.wait(0.3), "work resumed while a request was still being answered"
    assert passed.wait(5)


def test_the_gateway_asks_before_every_web_api_call(fake: FakeSlack) -> None:
    calls: list[str] = []
    before: Callable[[], None] = lambda: calls.append("asked")  # noqa: E731
    gateway = SlackGateway(build_client(BOT_TOKEN, fake.api_url), before_call=before)
    gateway.bot_user_id()
    assert calls == ["asked"]
    assert [method for method, _ in fake.calls] == ["auth.test"]


def test_the_running_bot_answers_first(running: RunningBot) -> None:
    """The bot's work pool threads are background threads; its request threads are not."""
    bot = running.bot
    assert bot.work.submit(bot.priority.in_background).result(5) is True
    assert bot.priority.in_background() is False
    assert running.driver.command("help", user_id=ALICE, channel_id="CGENERAL").status == 200
