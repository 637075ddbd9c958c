"""The inbox: work acknowledged to Slack is stored before the answer and done by a worker,
even when the worker that held it died; worker processes are supervised."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from incidentbot import inbox
from incidentbot.db import create_db_engine, session_factory, transaction
from incidentbot.group_commit import GroupCommit
from incidentbot.models import InboxJob, Incident, utcnow
from incidentbot.slack import blocks
from incidentbot.sqlite_writers import is_write
from incidentbot.worker import DoneMarker, DonePipe, InboxWorker, worker_name
from tests.conftest import ALICE, BOT_TOKEN, CAROL, SIGNING_SECRET, RunningBot
from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.process import BotProcess, bot_env
from tests.test_declare_e2e import declare, stored_incident


def jobs(running: RunningBot) -> list[InboxJob]:
    assert running.bot.inbox_store is not None
    with Session(running.bot.inbox_store.engine) as session:
        return list(session.scalars(select(InboxJob).order_by(InboxJob.id)))


def inbox_sessions(running: RunningBot) -> sessionmaker[Session]:
    assert running.bot.inbox_store is not None
    return running.bot.inbox_store.sessions


def direct_messages(fake: FakeSlack, user: str) -> list[dict[str, object]]:
    return [message for channel in fake.channels()
            if channel.get("is_im") and channel.get("user") == user
            for message in fake.messages(channel["id"])]


def channel_named(fake: FakeSlack, suffix: str) -> str | None:
    return next((c["id"] for c in fake.channels() if c["name"].endswith(suffix)), None)


def test_acknowledged_declaration_waits_in_the_inbox_until_a_worker_runs(
        running: RunningBot) -> None:
    """With no worker running (it crashed after the ack), the request is stored, not lost;
    the next worker to start declares the incident, once."""
    assert running.bot.inbox is not None
    running.bot.inbox.stop()
    response = running.driver.command("declare Disk full on db-3", user_id=ALICE,
                                      channel_id="CGENERAL")
    assert response.status == 200
    [job] = jobs(running)  # stored claimed by the serving process's own worker
    assert job.done_at is None and job.attempts == 1
    assert job.claimed_by == running.bot.inbox.name
    assert "Disk+full+on+db-3" in job.body and job.content_type.startswith(
        "application/x-www-form-urlencoded")
    assert not running.fake.calls_to("conversations.create")

    running.bot.inbox.start()
    channel = eventually(lambda: channel_named(running.fake, "disk-full-on-db-3"))
    eventually(lambda: running.fake.pins(channel))
    [job] = eventually(lambda: [j for j in jobs(running) if j.done_at is not None])
    assert job.attempts == 1
    assert len(running.fake.calls_to("conversations.create")) == 1


def test_a_lapsed_claim_is_taken_again(running: RunningBot) -> None:
    """A worker claimed the job and died (its lease lapsed): another runs it."""
    assert running.bot.inbox is not None
    running.bot.inbox.stop()
    running.driver.command("declare Checkout errors", user_id=ALICE, channel_id="CGENERAL")
    with transaction(inbox_sessions(running)) as session:  # stored for a worker now dead
        session.execute(update(InboxJob).values(claimed_by="dead-worker:1"))
    [claimed] = jobs(running)
    with transaction(inbox_sessions(running)) as session:  # held: nobody else takes it
        assert inbox.claim(session, "other:2", utcnow(), limit=10) == []
        session.execute(update(InboxJob).values(  # ... until its lease lapses
            claimed_at=utcnow() - inbox.LEASE - timedelta(seconds=1)))

    running.bot.inbox.start()
    eventually(lambda: channel_named(running.fake, "checkout-errors"))
    [job] = eventually(lambda: [j for j in jobs(running) if j.done_at is not None])
    assert job.id == claimed.id and job.attempts == 2 and job.claimed_by != "dead-worker:1"


def test_claims_of_a_dead_worker_on_this_host_are_taken_back_at_start(
        running: RunningBot) -> None:
    """No lease to wait out after a crash and restart on the same host."""
    assert running.bot.inbox is not None
    running.bot.inbox.stop()
    running.driver.command("declare Queue stuck", user_id=ALICE, channel_id="CGENERAL")
    gone = f"{socket.gethostname()}:{2**22 + 1}/0"  # above Linux's largest pid: not running
    with transaction(inbox_sessions(running)) as session:
        session.execute(update(InboxJob).values(claimed_by=gone))

    running.bot.inbox.start()
    eventually(lambda: channel_named(running.fake, "queue-stuck"), timeout=5)
    [job] = eventually(lambda: [j for j in jobs(running) if j.done_at is not None])
    assert job.attempts == 2 and job.claimed_by != gone


def test_a_form_refused_when_its_work_runs_is_reported_to_its_author(
        running: RunningBot) -> None:
    """Valid when Slack was answered, not when the worker ran it (the person picked was
    deactivated meanwhile): the author is told by DM, never silently dropped."""
    fake, driver = running.fake, running.driver
    fake.add_user(CAROL, "carol")
    incident = declare(running, "Search down")
    driver.block_action(blocks.ASSIGN_ROLE, user_id=ALICE, channel_id=incident.channel_id,
                        message_ts=incident.card_ts or "", value=str(incident.id))
    view = eventually(lambda: (v := fake.last_view()) and v["callback_id"] == blocks.ROLE_VIEW
                      and v)
    assert running.bot.inbox is not None
    running.bot.inbox.stop()
    response = driver.submit_view(view["id"], {blocks.ROLE: "comms", blocks.USER: CAROL},
                                  user_id=ALICE)
    assert response.status == 200 and not response.body  # accepted: the modal closes
    fake.add_user(CAROL, "carol", deleted=True)

    running.bot.inbox.start()
    told = eventually(lambda: [m for m in direct_messages(fake, ALICE)
                               if "could not be applied" in m.get("text", "")])
    assert CAROL in told[0]["text"]
    assert stored_incident(running, incident.channel_id).holder("comms") is None


def test_two_workers_never_claim_the_same_job(engine: object) -> None:
    from sqlalchemy.orm import sessionmaker

    sessions = sessionmaker(engine, expire_on_commit=False)  # type: ignore[call-overload]
    now = utcnow()
    with transaction(sessions) as session:
        session.execute(InboxJob.__table__.insert(), [
            inbox.job_row(f"sig-{i}", f"body {i}", "application/json", now) for i in range(60)])
    taken: dict[str, list[int]] = {"a": [], "b": []}

    def drain(name: str) -> None:
        while True:
            with transaction(sessions) as session:
                batch = inbox.claim(session, name, utcnow(), limit=7)
            if not batch:
                return
            taken[name] += [job.id for job in batch]

    threads = [threading.Thread(target=drain, args=(name,)) for name in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    everything = taken["a"] + taken["b"]
    assert len(everything) == 60 and len(set(everything)) == 60


def test_a_worker_takes_the_jobs_stored_for_it_by_reading(running: RunningBot) -> None:
    """The serving process stores each job claimed by its own worker, which takes it with a
    read and marks finished jobs done together: on SQLite every write of the worker is one
    the next answer to Slack may queue behind."""
    assert running.bot.inbox is not None
    inbox_writes: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE INBOX"):
            inbox_writes.append(statement)

    assert running.bot.inbox_store is not None
    inbox_engine = running.bot.inbox_store.engine
    event.listen(inbox_engine, "before_cursor_execute", record)
    try:
        for title in ("Disk full", "Queue stuck", "Search slow", "Mail delayed"):
            running.driver.command(f"declare {title}", user_id=ALICE, channel_id="CGENERAL")
        eventually(lambda: len([j for j in jobs(running) if j.done_at is not None]) == 4)
    finally:
        event.remove(inbox_engine, "before_cursor_execute", record)
    assert {j.attempts for j in jobs(running)} == {1}
    assert not [w for w in inbox_writes if "claimed_by" in w]  # no claim
    assert 1 <= len(inbox_writes) < 4  # done marks, batched


def test_a_replacement_worker_runs_what_its_predecessor_left_once_more(engine: Engine) -> None:
    """Jobs stored for a worker process that died are taken back by the one started in its
    place (same name): run again, with one more attempt counted, and marked done."""
    sessions = session_factory(engine)
    name = worker_name(os.getpid(), 0)
    with transaction(sessions) as session:
        session.execute(InboxJob.__table__.insert(), [
            inbox.job_row(f"sig-{i}", f"body {i}", "application/json", utcnow(), name)
            for i in range(3)])
    ran: list[tuple[int, int]] = []
    worker = InboxWorker(sessions, lambda job: ran.append((job.id, job.attempts)),
                         threading.Event(), threads=2, name=name)
    worker.start()
    try:
        eventually(lambda: len(ran) == 3)
    finally:
        worker.stop()
    assert sorted(attempts for _, attempts in ran) == [2, 2, 2]
    with transaction(sessions) as session:
        assert all(job.done_at for job in session.scalars(select(InboxJob)))


def test_a_worker_process_reports_finished_jobs_and_its_server_marks_them_done(
        engine: Engine) -> None:
    """A worker process's jobs are read, run, and reported through the pipe: its only write
    to the inbox in the steady state would be a turn the serving process's next answer to
    Slack waits for. The serving process's `DoneMarker` marks them done."""
    sessions = session_factory(engine)
    name = worker_name(os.getpid(), 0)
    pipe = DonePipe(multiprocessing.get_context("spawn"))
    ran: list[int] = []
    wake = threading.Event()
    worker = InboxWorker(sessions, lambda job: ran.append(job.id), wake, threads=2, name=name,
                         report_done=pipe.send)
    marker = DoneMarker(sessions, pipe.receive)
    writers: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if is_write(statement) and threading.current_thread() is not threading.main_thread():
            writers.append(threading.current_thread().name)

    worker.start()
    marker.start()
    event.listen(engine, "before_cursor_execute", record)
    try:
        with transaction(sessions) as session:
            session.execute(InboxJob.__table__.insert(), [
                inbox.job_row(f"sig-{i}", f"body {i}", "application/json", utcnow(), name)
                for i in range(5)])
        wake.set()
        eventually(lambda: len(ran) == 5)
        worker.stop()
        marker.stop()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with transaction(sessions) as session:
        done = {job.id: job.done_at for job in session.scalars(select(InboxJob))}
    assert sorted(done) == sorted(ran) and all(done.values())
    assert writers and set(writers) == {"done-marks"}


def test_finished_job_ids_cross_the_pipe_whole_in_pipe_sized_messages() -> None:
    pipe = DonePipe(multiprocessing.get_context("spawn"))
    ids = list(range(1, 1_202))
    pipe.send(ids)
    assert pipe.receive(1.0) == ids
    assert pipe.receive(0) == []


def test_a_declaration_is_acknowledged_while_the_database_is_locked_for_writing(
        running: RunningBot) -> None:
    """The inbox does not share the database's write lock (on SQLite a file of its own, on
    PostgreSQL a table of its own): while another connection holds the database's write lock
    (the worker's writes of a declaration, say), Slack still gets its answer; the incident
    is declared once the lock is released."""
    answered: list[int] = []
    locker = create_db_engine(str(running.bot.engine.url.render_as_string(
        hide_password=False))).connect()
    try:
        if locker.dialect.name == "sqlite":
            locker.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite: no other writer on the file
        else:
            locker.begin()
            locker.execute(text("LOCK TABLE incidents, timeline_events IN EXCLUSIVE MODE"))
        sender = threading.Thread(target=lambda: answered.append(running.driver.command(
            "declare Locked out", user_id=ALICE, channel_id="CGENERAL").status))
        sender.start()
        sender.join(timeout=20)  # the lock is held until the answer comes (or 20 s pass)
        assert answered == [200]
        assert [job for job in jobs(running) if "Locked+out" in job.body]  # stored, not run
        with running.session() as session:  # not declared while its tables are locked
            assert session.scalar(select(Incident).where(Incident.title == "Locked out")) is None
    finally:
        locker.rollback()
        locker.close()
    eventually(lambda: channel_named(running.fake, "locked-out"), timeout=20)


def test_the_inbox_of_an_sqlite_database_moves_to_a_file_of_its_own(
        database_url: str, engine: Engine) -> None:
    """Rows an earlier version kept in the bot's SQLite database move into the inbox's own
    file when the bot starts (once); on PostgreSQL the inbox stays a table of the database."""
    sessions = session_factory(engine)
    with transaction(sessions) as session:
        session.execute(InboxJob.__table__.insert(), [
            inbox.job_row("sig-kept", "pending", "application/json", utcnow())])
    store = inbox.InboxStore.open(database_url, engine, GroupCommit(engine))
    try:
        with transaction(store.sessions) as session:
            [job] = session.scalars(select(InboxJob)).all()
        assert job.signature == "sig-kept" and job.body == "pending" and job.done_at is None
        if engine.dialect.name == "postgresql":
            assert store.engine is engine
            return
        assert store.own_file and store.engine.url.database.endswith("-inbox.db")
        with transaction(sessions) as session:
            assert session.scalars(select(InboxJob)).all() == []
        assert store.take_over(sessions) == 0
    finally:
        store.close()


def children_of(pid: int) -> list[int]:
    """The worker processes of a bot (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.append(int(entry.name))
    return found


def test_worker_process_does_the_work_and_is_restarted_when_it_dies(
        database_url: str) -> None:
    """`python app.py` (one worker process by default): the worker declares, every thread of
    it under SCHED_IDLE; killed, it is reported down, replaced, and the next declaration
    works."""
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        fake.add_user(ALICE, "alice")
        bot = BotProcess(bot_env(fake.api_url, database_url)).start()
        try:
            assert bot.proc is not None
            driver = SlackDriver(f"{bot.url}/slack/events", SIGNING_SECRET, fake)
            driver.command("declare Before the kill", user_id=ALICE, channel_id="CGENERAL")
            eventually(lambda: channel_named(fake, "before-the-kill"))
            [worker] = eventually(lambda: children_of(bot.proc.pid))  # type: ignore[union-attr]
            threads = [int(t.name) for t in Path(f"/proc/{worker}/task").iterdir()]
            assert len(threads) > 3  # the inbox worker, the scheduler, the card refresh…
            assert {os.sched_getscheduler(t) for t in threads} == {os.SCHED_IDLE}
            assert os.sched_getscheduler(bot.proc.pid) == os.SCHED_OTHER
            os.kill(worker, signal.SIGKILL)
            eventually(lambda: [w for w in children_of(bot.proc.pid)  # type: ignore[union-attr]
                                if w != worker])
            bot.wait_healthy()
            response = driver.command("declare After the kill", user_id=ALICE,
                                      channel_id="CGENERAL")
            assert response.status == 200
            eventually(lambda: channel_named(fake, "after-the-kill"), timeout=20)
            assert "exited (code -9); starting another" in bot.output()
        finally:
            bot.stop()
