"""Answers to Slack go before background work.

Request threads and the work pool share one interpreter lock. When the pool is busy (a burst
of modal opens, each reading the incident and calling `views.open`), a request thread waits
for the interpreter at every step and its answer leaves late: measured at 300 `/incident
update`/s, median answers took 370 ms and 1 request in 9 got none within 15 s.

Here background threads step aside at safe points (before each Slack Web API call, where they
hold no database connection or write turn) while any request is being answered, for at most
`max_wait_s` each time, so background work is delayed under a burst but never stopped.

Worker processes, which answer nothing, run under SCHED_IDLE and give way at every step
instead (`give_way`): see there.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event

MAX_WAIT_S = 0.02


def _libc_sched_yield() -> Callable[[], int] | None:
    """libc's `sched_yield`, called without releasing the interpreter lock (POSIX only)."""
    try:
        return ctypes.PyDLL(None).sched_yield  # type: ignore[no-any-return]
    except (AttributeError, OSError, TypeError):
        return None


_sched_yield = _libc_sched_yield()


class AckPriority:
    """Counts requests being answered; background threads wait for that count to reach 0."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self._max_wait_s = max_wait_s
        self._changed = threading.Condition()
        self._answering = 0
        self._background = threading.local()

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Around the handling of one request, up to its answer."""
        with self._changed:
            self._answering += 1
        try:
            yield
        finally:
            with self._changed:
                self._answering -= 1
                if not self._answering:
                    self._changed.notify_all()

    def mark_background(self) -> None:
        """Make the calling thread one that steps aside (a work pool's `initializer`)."""
        self._background.on = True

    def in_background(self) -> bool:
        return bool(getattr(self._background, "on", False))

    def step_aside(self) -> None:
        """In a background thread, wait while requests are being answered (bounded); in any
        other thread, return at once. Call it only where the thread holds no lock or database
        connection that a request might need."""
        if not self._answering or not self.in_background():
            return
        with self._changed:
            self._changed.wait_for(lambda: not self._answering, self._max_wait_s)


def give_way(*_: object) -> None:
    """Let any other runnable thread of this core run first: a scheduling point.

    A worker process runs under SCHED_IDLE, and a serving thread that wakes preempts it at
    once. But a serving thread made runnable by another one (waitress's loop thread, woken as
    a request thread finishes its answer) can be found a hair past its fair share (not
    "eligible") by the kernel's EEVDF scheduler when that thread blocks; the worker then
    keeps the core until the next scheduler tick, up to 4 ms at HZ=250. Yielding at each
    step of a job (every database statement and Web API call, `give_way_at_each_step`)
    bounds that wait to one step. With nothing else runnable it returns at once.

    The interpreter lock is kept through the call (`os.sched_yield` releases it): a thread
    that gave it up at every step met the worker's other threads queued for it, waited up
    to a switch interval (5 ms) to get it back, and modal opens at 300/s fell behind.
    """
    if _sched_yield is not None:
        _sched_yield()


def give_way_at_each_step(*engines: Engine) -> None:
    """Call `give_way` before every statement on these engines (a worker process's).

    Call it before any thread runs statements on them: SQLAlchemy's listener list is not
    safe to extend while another thread iterates it (a reminder's confirmation, run by the
    scheduler while a worker was still starting, failed with "deque mutated during
    iteration", and the reminder stayed unconfirmed). An engine given again is left as is.
    """
    for engine in engines:
        if not event.contains(engine, "before_cursor_execute", give_way):
            event.listen(engine, "before_cursor_execute", give_way)
