"""Concurrent inserts through one `GroupCommit`, as request threads make them.

`python -m bench.group_commit [--database postgresql] [--threads 16] [--inserts 3000]`
inserts replay-ledger rows from that many threads at once, on a fresh database, and prints
inserts per second and each insert's p50 / p90 / p99 wait (its row queued to committed).
Run it pinned to one core (`taskset -c 0`) to match the bench's process under test.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import seed
from bench.run import pct
from incidentbot.core import security
from incidentbot.db import create_db_engine, migrate
from incidentbot.group_commit import GroupCommit, Row
from incidentbot.models import SeenRequest


def measure(url: str, threads: int, inserts: int) -> tuple[float, list[float]]:
    """(inserts per second, each insert's wait in ms)."""
    engine = create_db_engine(url)
    migrate(engine)
    writes = GroupCommit(engine)
    now = datetime.now(UTC)
    waits: list[float] = []
    start = threading.Barrier(threads)

    def insert_many(count: int) -> None:
        start.wait()
        for _ in range(count):
            row = Row(SeenRequest.__table__, security.ledger_row(f"v0={uuid.uuid4().hex}", now),
                      security.LEDGER_KEY)
            began = time.perf_counter()
            writes.insert(row)
            waits.append((time.perf_counter() - began) * 1000)

    workers = [threading.Thread(target=insert_many, args=(inserts // threads,))
               for _ in range(threads)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    writes.close()
    engine.dispose()
    return len(waits) / elapsed, waits


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--inserts", type=int, default=3000)
    args = parser.parse_args(argv)
    with seed.fresh_database(args.database, Path(tempfile.mkdtemp())) as url:
        rate, waits = measure(url, args.threads, args.inserts)
    print("| database | threads | inserts/s | wait p50 | p90 | p99 |\n"
          "|---|---:|---:|---:|---:|---:|\n"
          f"| {args.database} | {args.threads} | {rate:.0f} | {pct(waits, 50):.2f} ms | "
          f"{pct(waits, 90):.2f} ms | {pct(waits, 99):.2f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
