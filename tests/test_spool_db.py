"""The spool of a serving process on SQLite: one append per request, moved into the inbox by
its worker, with nothing lost or run twice across restarts, torn records and a full disk."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from incidentbot.db import create_db_engine, migrate, transaction
from incidentbot.group_commit import GroupCommit
from incidentbot.inbox import InboxStore, assigned
from incidentbot.models import InboxJob, SpoolPosition, TimelineEvent, utcnow
from incidentbot.server import create_bot, make_http_server, stop_http_server
from incidentbot.spool import (
    HEAD,
    RecentSignatures,
    SpoolBehind,
    SpooledRequest,
    SpoolReader,
    SpoolWriter,
    decode,
    encode,
    spool_files,
)
from incidentbot.worker import InboxWorker
from tests.conftest import ALICE, SIGNING_SECRET, make_settings
from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.test_group_commit_db import message, new_incident

WORKER = "host:1/0"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InboxStore]:
    engine: Engine = create_db_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    migrate(engine)
    opened = InboxStore.open(f"sqlite:///{tmp_path / 'bot.db'}", engine, GroupCommit(engine))
    yield opened
    opened.close()
    engine.dispose()


def base_of(store: InboxStore) -> Path:
    assert store.engine.url.database
    return Path(store.engine.url.database)


def writer(store: InboxStore, **kwargs: int) -> SpoolWriter:
    return SpoolWriter.open(base_of(store), store.sessions, utcnow, **kwargs)


def move(store: InboxStore, limit: int = 500) -> int:
    with transaction(store.sessions) as session:
        return SpoolReader(base_of(store), WORKER, store.sessions, limit).move(session)


def bodies(store: InboxStore) -> list[str]:
    with transaction(store.sessions) as session:
        return [job.body for job in assigned(session, WORKER, 0, 10_000)]


def test_a_record_decodes_to_what_was_encoded_and_a_torn_one_is_told_apart() -> None:
    request = SpooledRequest("v0=abc", "payload=%7B%22type%22%3A%22x%22%7D ünïcode", FORM,
                             utcnow().replace(microsecond=250_000))
    record = encode(request)
    assert decode(record + record) == ([request, request], 2 * len(record), False)
    assert decode(record + record[:-1]) == ([request], len(record), False)  # still written
    assert decode(record[:HEAD.size - 1]) == ([], 0, False)
    flipped = bytearray(record)
    flipped[-1] ^= 0xFF
    assert decode(record + bytes(flipped)) == ([request], len(record), True)


def test_a_spooled_request_reaches_the_inbox_claimed_by_the_worker_once(
        store: InboxStore) -> None:
    spool = writer(store)
    assert spool.append("v0=1", "first", FORM) and spool.append("v0=2", "second", FORM)
    assert not spool.append("v0=1", "first", FORM)  # a replay is refused
    assert bodies(store) == []  # nothing is in the inbox until the worker moves it
    assert move(store) == 2
    assert move(store) == 0  # the position was recorded with the rows
    assert bodies(store) == ["first", "second"]
    with transaction(store.sessions) as session:
        jobs = session.scalars(select(InboxJob)).all()
        assert {job.claimed_by for job in jobs} == {WORKER}
        assert all(job.attempts == 1 and job.done_at is None for job in jobs)
    spool.close()


def texts(store: InboxStore) -> list[str]:
    with transaction(store.sessions) as session:
        return list(session.scalars(select(TimelineEvent.text).order_by(TimelineEvent.id)))


def test_spooled_rows_reach_their_table_once_beside_the_requests(store: InboxStore) -> None:
    incident = new_incident(store.engine)
    spool = writer(store)
    assert spool.append_row(message(incident, "1.0001", "first message"))
    assert spool.append("v0=1", "a request", FORM)
    assert spool.append_row(message(incident, "1.0002", "second message"))
    assert not spool.append_row(message(incident, "1.0001", "first message"))  # a retry
    assert texts(store) == []
    assert move(store) == 3
    assert texts(store) == ["first message", "second message"]
    assert bodies(store) == ["a request"]
    with transaction(store.sessions) as session:
        row = session.scalars(select(TimelineEvent)).first()
        assert row is not None and row.occurred_at.tzinfo is not None and row.actor_id == "U1"
    spool.close()
    again = writer(store)  # a restart: the keys of moved rows are not reloaded ...
    assert again.append_row(message(incident, "1.0002", "second message"))
    assert move(store) == 1
    assert texts(store) == ["first message", "second message"]  # ... and nothing is doubled
    again.close()


def test_a_row_the_database_refuses_is_dropped_and_the_rest_are_moved(
        store: InboxStore, caplog: pytest.LogCaptureFixture) -> None:
    incident = new_incident(store.engine)
    spool = writer(store)
    spool.append_row(message(incident, "2.0001", "before"))
    spool.append_row(message(incident + 1000, "2.0002", "of an incident that is gone"))
    spool.append_row(message(incident, "2.0003", "after"))
    with caplog.at_level(logging.ERROR, logger="incidentbot.spool"):
        assert move(store) == 3
    assert "Dropped a spooled timeline_events row the database refuses" in caplog.text
    assert texts(store) == ["before", "after"]
    assert move(store) == 0
    spool.close()


def test_waiting_for_the_move_returns_once_the_worker_has_moved_what_came_before(
        store: InboxStore) -> None:
    incident = new_incident(store.engine)
    spool = writer(store)
    spool.wait_moved(timeout_s=0.0)  # nothing spooled: nothing to wait for
    spool.append_row(message(incident, "3.0001"))
    with pytest.raises(SpoolBehind):
        spool.wait_moved(timeout_s=0.05)
    mover = threading.Timer(0.1, move, args=(store,))
    mover.start()
    spool.wait_moved(timeout_s=5)
    assert texts(store) == ["m 3.0001"]
    mover.join()
    spool.close()


class CountingWake:
    """A worker's wake-up (no one sets it here) that counts the waits for it while
    `counting()` holds."""

    def __init__(self, counting: Callable[[], bool]) -> None:
        self.event = threading.Event()
        self.counting = counting
        self.waits = 0

    def set(self) -> None:
        self.event.set()

    def clear(self) -> None:
        self.event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += self.counting()
        return self.event.wait(timeout)


def test_a_worker_moves_a_backlog_larger_than_one_move_without_waiting_between_moves(
        store: InboxStore) -> None:
    """Each move takes at most `limit` records; after one that moved some, the worker looks
    again at once rather than at its next wake-up (a second, when nothing wakes it)."""
    incident = new_incident(store.engine)
    spool = writer(store)
    for i in range(25):
        spool.append_row(message(incident, f"4.{i:04d}"))
    wake = CountingWake(lambda: len(texts(store)) < 25)
    reader = SpoolReader(base_of(store), WORKER, store.sessions, limit=10)
    worker = InboxWorker(store.sessions, lambda job: None, wake, threads=1, name=WORKER,
                         intake=reader.intake)
    worker.start()
    try:
        eventually(lambda: len(texts(store)) == 25)
    finally:
        worker.stop()
        spool.close()
    assert wake.waits == 0  # none while a backlog was left


def test_moves_take_at_most_the_limit_per_transaction(store: InboxStore) -> None:
    spool = writer(store)
    for i in range(7):
        spool.append(f"v0={i}", f"body {i}", FORM)
    assert [move(store, limit=3) for _ in range(4)] == [3, 3, 1, 0]
    assert bodies(store) == [f"body {i}" for i in range(7)]
    spool.close()


def test_full_files_are_moved_in_order_then_deleted(store: InboxStore) -> None:
    spool = writer(store, file_bytes=200)  # a new file every couple of records
    for i in range(9):
        spool.append(f"v0={i}", f"body {i} " + "x" * 60, FORM)
    assert len(spool_files(base_of(store))) >= 4
    assert move(store) == 9
    move(store)  # the next move deletes the files before the position
    assert len(spool_files(base_of(store))) == 1  # only the file being written is left
    assert [b.split()[1] for b in bodies(store)] == [str(i) for i in range(9)]
    spool.close()


def test_a_restarted_server_refuses_replays_and_its_worker_loses_nothing(
        store: InboxStore) -> None:
    first = writer(store)
    for i in range(3):
        first.append(f"v0={i}", f"body {i}", FORM)
    assert move(store, limit=2) == 2  # the worker moved two, then the server crashed
    first.close()
    second = writer(store)  # its restart: a new file after the first
    assert len(spool_files(base_of(store))) == 2
    assert not second.append("v0=0", "body 0", FORM)  # moved: known from the inbox
    assert not second.append("v0=2", "body 2", FORM)  # not moved yet: known from the file
    assert second.append("v0=3", "body 3", FORM)
    assert move(store) == 2
    assert bodies(store) == [f"body {i}" for i in range(4)]
    second.close()


def test_a_torn_record_at_the_end_of_a_finished_file_is_skipped(
        store: InboxStore, caplog: pytest.LogCaptureFixture) -> None:
    first = writer(store)
    first.append("v0=1", "whole", FORM)
    first.close()
    [path] = spool_files(base_of(store)).values()
    torn = encode(SpooledRequest("v0=2", "torn by a crash", FORM, utcnow()))
    with path.open("ab") as file:
        file.write(torn[:-3])
    assert move(store) == 1
    assert move(store) == 0  # still being written, as far as anyone knows
    second = writer(store)  # the server restarts: the torn file is finished
    second.append("v0=3", "after the restart", FORM)
    with caplog.at_level(logging.WARNING, logger="incidentbot.spool"):
        assert move(store) == 1
    assert f"Skipped {len(torn) - 3} bytes at the end of {path.name} (a torn record)" \
        in caplog.text
    assert bodies(store) == ["whole", "after the restart"]
    second.close()


def test_a_worker_finds_the_files_of_a_server_that_restarted_before_it_moved_any(
        store: InboxStore) -> None:
    with transaction(store.sessions) as session:
        session.add(SpoolPosition(id=1, file=5, offset=0))  # files 1-4 were moved, deleted
    spool = writer(store)
    assert list(spool_files(base_of(store))) == [6]
    spool.append("v0=1", "body", FORM)
    assert move(store) == 1
    spool.close()


def test_recent_signatures_are_forgotten_after_the_window() -> None:
    now = [0.0]
    recent = RecentSignatures(window_s=10, clock=lambda: now[0])
    assert recent.add("a") and not recent.add("a")
    now[0] = 5.0
    assert recent.add("b")
    now[0] = 10.5
    assert recent.add("a") and not recent.add("b") and len(recent) == 2


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from incidentbot.spool import RecentSignatures, SpoolWriter, decode
    from incidentbot.models import utcnow
    from sqlalchemy.orm import sessionmaker
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    base = Path(sys.argv[1])
    spool = SpoolWriter(base, 1, RecentSignatures(), utcnow, sessionmaker())
    spool.append("v0=1", "x" * 1000, "f")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1500, hard))  # 'the disk is full'
    try:
        spool.append("v0=2", "y" * 1000, "f")
    except OSError as exc:
        print("refused:", exc.strerror)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print("retried:", spool.append("v0=2", "y" * 1000, "f"))
    [path] = base.parent.glob(base.name + "-spool-*")
    records, used, bad = decode(path.read_bytes())
    print("stored:", [r.signature for r in records], used == path.stat().st_size, bad)
""")


def test_a_write_cut_short_by_a_full_disk_leaves_no_partial_record(tmp_path: Path) -> None:
    """The append fails (the request's work then runs in the serving process, see
    `Handoff`), the file is cut back to its last whole record, and the same request can be
    stored once there is room again."""
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "bot-inbox.db")],
                            capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "refused: the spool file is full", "retried: True",
        "stored: ['v0=1', 'v0=2'] True False"]


def test_a_request_the_spool_cannot_take_is_worked_on_in_the_serving_process(
        tmp_path: Path, fake: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    """A serving process (no worker runs) whose spool write fails still answers and does
    the work itself, rather than acknowledging work that nobody will do."""
    settings = make_settings(f"sqlite:///{tmp_path / 'bot.db'}", fake)
    bot = create_bot(settings, role="front", wake=threading.Event(), worker="host:1/0")
    server = make_http_server(bot, host="127.0.0.1", port=0)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        assert bot.spool is not None
        driver = SlackDriver(f"http://127.0.0.1:{server.effective_port}/slack/events",
                             SIGNING_SECRET, fake)
        assert driver.command("declare Spooled", user_id=ALICE, channel_id="CGENERAL")\
            .status == 200
        read_only = os.open(os.devnull, os.O_RDONLY)
        os.dup2(read_only, bot.spool._fd)  # the spool's writes now fail (EBADF)
        os.close(read_only)
        with caplog.at_level(logging.WARNING, logger="incidentbot.slack.handoff"):
            assert driver.command("declare Not spooled", user_id=ALICE,
                                  channel_id="CGENERAL").status == 200
            eventually(lambda: [c for c in fake.channels() if c["name"].endswith(
                "not-spooled")])
        assert "Inbox unavailable (OSError); running the work in this process" in caplog.text
        # the first waits in the spool for a worker
        assert not [c for c in fake.channels() if c["name"].split("-", 2)[2] == "spooled"]
    finally:
        stop_http_server(server)
        bot.close()
