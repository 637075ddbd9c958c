"""Background work steps aside while Slack's requests are being answered."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import event

from incidentbot import ack_priority
from incidentbot.ack_priority import AckPriority
from incidentbot.reminders import ReminderScheduler
from incidentbot.server import create_bot
from incidentbot.slack.gateway import SlackGateway, build_client
from tests.conftest import ALICE, BOT_TOKEN, RunningBot, make_settings
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


def test_a_worker_process_gives_way_at_each_statement_and_web_api_call(
        fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker process's threads yield the core before every database statement and Web
    API call (`give_way`); a serving process's never do."""
    yields: list[str] = []
    real_yield = ack_priority._sched_yield
    assert real_yield is not None
    monkeypatch.setattr(ack_priority, "_sched_yield",
                        lambda: (yields.append(threading.current_thread().name), real_yield()))
    settings = make_settings(f"sqlite:///{tmp_path / 'bot.db'}", fake)
    channel = fake.add_channel("general", [ALICE, fake.bot_user_id])
    for role, gives_way in (("front", False), ("worker", True)):
        bot = create_bot(settings, role=role, wake=threading.Event(), worker="test:0/0")
        try:
            mine = threading.current_thread().name
            before = yields.count(mine)
            bot.flows.open_incidents()
            bot.flows.gateway.post_message(channel, "hello")
            assert (yields.count(mine) - before >= 2) is gives_way, role
        finally:
            bot.close()


def test_a_worker_gives_way_from_before_its_scheduler_runs(
        fake: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener is on the engine before the reminder scheduler's threads run statements
    on it: SQLAlchemy's listener list is not safe to extend while another thread iterates
    it (a reminder's confirmation once failed with "deque mutated during iteration")."""
    registered: list[bool] = []
    real_start = ReminderScheduler.start

    def start(scheduler: ReminderScheduler) -> None:
        registered.append(event.contains(scheduler._engine, "before_cursor_execute",
                                         ack_priority.give_way))
        real_start(scheduler)

    monkeypatch.setattr(ReminderScheduler, "start", start)
    settings = make_settings(f"sqlite:///{tmp_path / 'bot.db'}", fake)
    bot = create_bot(settings, role="worker", wake=threading.Event(), worker="test:0/0")
    bot.close()
    assert registered == [True]
