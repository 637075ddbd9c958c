"""Planning many reminders at once (`ReminderScheduler.plan_many`) on real databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.executors.debug import DebugExecutor
from sqlalchemy import Engine

from incidentbot.jobs.scheduler import ReminderScheduler, run_scheduled


@pytest.fixture
def fired() -> list[int]:
    return []


@pytest.fixture
def reminders(engine: Engine, fired: list[int]) -> Iterator[ReminderScheduler]:
    lock = threading.Lock()

    def record(incident_id: int) -> None:
        with lock:
            fired.append(incident_id)

    scheduler = ReminderScheduler(engine)
    scheduler.on("reminder", record)
    scheduler.start()
    yield scheduler
    scheduler.shutdown()


def job_fields(reminders: ReminderScheduler, incident_id: int) -> tuple[object, ...]:
    job = reminders.scheduler.get_job(f"reminder:{incident_id}")
    assert job is not None
    return (job.func_ref, job.args[0], job.trigger.run_date, job.next_run_time, job.coalesce,
            job.misfire_grace_time, job.max_instances, job.executor)


def test_a_job_planned_in_bulk_is_the_job_planned_alone(reminders: ReminderScheduler) -> None:
    """`plan_many` stores the job APScheduler's own `add_job` makes."""
    due = datetime.now(UTC) + timedelta(hours=1)
    reminders.scheduler.add_job(run_scheduled, "date", run_date=due, args=["reminder", 1],
                                id="reminder:1", name="reminder 1")
    assert reminders.plan_many("reminder", [(2, due)]) == 1
    assert job_fields(reminders, 1) == job_fields(reminders, 2)
    assert reminders.scheduler.get_job("reminder:2").args == ("reminder", 2)


def test_bulk_planning_moves_stored_jobs_and_adds_new_ones(reminders: ReminderScheduler) -> None:
    first = datetime.now(UTC) + timedelta(hours=1)
    reminders.plan_many("reminder", [(i, first) for i in range(1, 1201)])
    later = first + timedelta(minutes=30)
    reminders.plan_many("reminder", [(i, later) for i in range(1, 1301, 2)])
    planned = reminders.planned()
    assert len(planned) == 1250
    assert planned[1] == pytest.approx(later.timestamp())
    assert planned[2] == pytest.approx(first.timestamp())
    assert planned[1299] == pytest.approx(later.timestamp())


def test_jobs_planned_in_bulk_fire_once_each(reminders: ReminderScheduler,
                                             fired: list[int]) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=0.5)
    reminders.plan_many("reminder", [(i, soon + timedelta(milliseconds=i)) for i in range(40)])
    deadline = time.monotonic() + 15
    while len(fired) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert sorted(fired) == list(range(40))
    assert reminders.planned() == {}


def test_a_reminder_that_plans_the_next_one_keeps_it(engine: Engine) -> None:
    """The handler of a due reminder plans the next one under the same job id; the
    scheduler's removal of the job it ran must not delete that. APScheduler's DebugExecutor
    runs the job inside the dispatch, so the handler always gets there first."""
    later = datetime.now(UTC) + timedelta(hours=1)
    fired: list[int] = []

    def plan_next(incident_id: int) -> None:
        fired.append(incident_id)
        scheduler.plan(incident_id, later)

    scheduler = ReminderScheduler(engine, executor=DebugExecutor())
    scheduler.on("reminder", plan_next)
    scheduler.start()
    try:
        scheduler.plan(7, datetime.now(UTC) + timedelta(milliseconds=100))
        deadline = time.monotonic() + 15
        while not fired and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the dispatch that ran the handler has finished
        assert fired == [7]
        assert scheduler.planned() == {7: pytest.approx(later.timestamp())}
    finally:
        scheduler.shutdown()
