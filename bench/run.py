"""incidentbot's budgets, measured from outside: `python -m bench [--quick] [--db ...]`.

The bot runs as users run it (`python app.py`, settings in the environment) against the fake
Slack (bench/fake.py; every Web API answer after 150 ms unless said) and is driven by signed
HTTP requests (bench/load.py). Prints one Markdown table; raw figures go to bench/last-run.json.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import load, seed
from bench.fake import BOT_TOKEN, BROADCAST, CLICKERS, GENERAL, USER

ROOT = Path(__file__).resolve().parent.parent
SECRET, LATENCY = "bench-signing-secret", 0.15
CRITICAL = 3 * LATENCY  # conversations.create -> chat.postMessage -> pins.add, one after another
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
MIX = ["message"] * 60 + ["click"] * 20 + ["update"] * 9 + ["note"] * 10 + ["declare"]
FULL = {"ack_s": 15, "singles": 5, "ingest": 6000, "reminded": 200, "watch_s": 20, "big": 10_000}
QUICK = {"ack_s": 5, "singles": 3, "ingest": 2000, "reminded": 50, "watch_s": 12, "big": 0}
# The harness (this process, the fake Slack) stands in for Slack, whose CPU is not the bot's:
# with 2+ cores it gets the first half and the bot the rest (BENCH_PIN=0: all share all).
_CPUS = sorted(os.sched_getaffinity(0))
CORES = None if os.environ.get("BENCH_PIN") == "0" or len(_CPUS) < 2 else (
    set(_CPUS[:len(_CPUS) // 2]), set(_CPUS[len(_CPUS) // 2:]))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1] if ordered else math.nan


def get(port: int, path: str, body: Any = None, timeout: float = 60) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET" if body is None else "POST", path,
                     None if body is None else json.dumps(body))
        response = conn.getresponse()
        return {**json.loads(response.read() or b"{}"), "status": response.status}
    finally:
        conn.close()


def process_tree(pid: int) -> dict[int, str]:
    """{pid: start time} of a process and its descendants (Linux /proc)."""
    found, todo = {}, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            proc = Path(f"/proc/{current}")
            found[current] = (proc / "stat").read_text().rpartition(")")[2].split()[19]
            todo += map(int, (proc / "task" / str(current) / "children").read_text().split())
    return found


class Fake:
    """The fake Slack process (niced: it shares its core with the load generator)."""

    def __init__(self, workdir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fake"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=(workdir / "fake.log").open("wb"), preexec_fn=lambda: os.nice(10))
        self.port = int(self.proc.stdout.readline().split()[1])  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{self.port}"
        self.slack = load.Slack(self.url)
        self.latency(LATENCY)

    def __call__(self, path: str, body: Any = None) -> dict[str, Any]:
        return get(self.port, f"/bench/{path}", body)

    def latency(self, seconds: float) -> None:
        self("latency", {"seconds": seconds})

    def drain(self, cap_s: float = 60) -> None:
        """Wait until the bot has made no Slack call for a second (its work is done)."""
        last, since, started = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - started < cap_s and time.monotonic() - since < 1:
            time.sleep(0.2)
            if (calls := self("calls")["calls"]) != last:
                last, since = calls, time.monotonic()


class Bot:
    """`python app.py` with settings in the environment; ready once /healthz answers 200."""

    def __init__(self, fake: Fake, url: str, workdir: Path, **settings: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_APP_TOKEN": "", "SLACK_API_URL": f"{fake.url}/api/",
               "DATABASE_URL": url, "HOST": "127.0.0.1", "PORT": str(self.port),
               "BROADCAST_CHANNEL": BROADCAST, "LOG_LEVEL": "WARNING", **settings}
        started, log_path = time.perf_counter(), workdir / f"bot-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")], cwd=workdir, env=env,
            stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
            preexec_fn=None if CORES is None else lambda: os.sched_setaffinity(0, CORES[1]))
        while not self.healthy():
            if self.proc.poll() is not None or time.perf_counter() - started > 120:
                self.stop()
                raise RuntimeError(f"the bot did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        self.startup_s = time.perf_counter() - started

    def healthy(self) -> bool:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            return get(self.port, "/healthz", timeout=2)["status"] == 200
        return False

    def rss_mib(self) -> float:
        """Resident memory of the process and its children (if it starts any)."""
        total = 0
        for pid in process_tree(self.proc.pid):
            with contextlib.suppress(OSError, AttributeError):
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]
        return total / 1024

    def send(self, makers: list[load.Maker], **how: Any) -> list[load.Sent]:
        return load.send(self.port, SECRET, makers, **how)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM; after `timeout`, SIGKILL to whatever is left of its process tree."""
        tree = process_tree(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        for pid, started in tree.items():
            if process_tree(pid).get(pid) == started:  # still that very process
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


# -- the budgets ------------------------------------------------------------------------


def declare(fake: Fake, bot: Bot, count: int, rounds: int = 1, rate: float | None = None,
            timeout: float = 30) -> dict[str, Any]:
    """`rounds` times: `/incident declare <title>` × count (at once, or at `rate`/s), then
    wait until each is ready: channel created, declarer invited, topic set, card posted and
    pinned, broadcast posted (by the fake's clock)."""
    declared: list[dict[str, Any]] = []
    for _ in range(rounds):
        tags = [uuid.uuid4().hex[:10] for _ in range(count)]
        sent = bot.send([lambda t=t: fake.slack.slash(f"declare Bench {t}", GENERAL, USER)
                         for t in tags], rate=rate, concurrency=count)
        out = {t: {"sent": s.at, "ack": s.status} for t, s in zip(tags, sent, strict=True)}
        deadline = time.monotonic() + timeout
        while any("ready_s" not in d for d in out.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
            for channel, meta in fake("state")["channels"].items():
                tag = re.search(r"bench-([0-9a-f]{10})", meta.get("name", ""))
                if tag and tag[1] in out:
                    steps = [meta.get(k) for k in ("created", "topic_at", "card_at",
                                                   "pinned_at", "broadcast_at")]
                    out[tag[1]].update(channel=channel, meta=meta)
                    if None not in steps and USER in meta["invited"]:
                        ready = max(*steps, meta["invited"][USER])
                        out[tag[1]]["ready_s"] = ready - out[tag[1]]["sent"]
        declared += out.values()
    times = [d.get("ready_s", math.inf) for d in declared]
    return {"declared": declared, "ready": sum(t < math.inf for t in times),
            "count": len(times), "median_s": statistics.median(times), "p95_s": pct(times, 95)}


def clicks(fake: Fake, bot: Bot, incident: dict[str, str], latency: float) -> dict[str, Any]:
    """20 people click the card's "Post update" at once: when did each modal open?"""
    fake.latency(latency)
    sent = bot.send([lambda u=u: fake.slack.click("card_post_update", incident["incident"],
                                                  incident["channel"], incident["card_ts"], u)
                     for u in CLICKERS], concurrency=len(CLICKERS))
    deadline = time.monotonic() + 10 + 20 * latency
    while time.monotonic() < deadline:
        state = fake("state")
        if all(s.trigger in state["opened"] or s.trigger in state["refused"] for s in sent):
            break
        time.sleep(0.1)
    fake.latency(LATENCY)
    waits = [state["opened"].get(s.trigger, math.inf) - s.at for s in sent]
    refused = [state["refused"][s.trigger] for s in sent if s.trigger in state["refused"]]
    return {"latency_s": latency, "clicks": len(sent), "opened": sum(w < math.inf for w in waits),
            "expired": refused.count("expired_trigger_id"), "refused": refused,
            "p50_s": pct(waits, 50), "p95_s": pct(waits, 95)}


def ack_mix(fake: Fake, bot: Bot, incidents: list[dict[str, str]], seconds: float,
            rate: float = 100) -> dict[str, Any]:
    """Open loop at `rate`/s: channel messages, "Post update" clicks, `/incident` commands."""
    kinds = random.Random(7).sample(MIX, len(MIX))

    def make(i: int) -> load.Request:
        kind, inc = kinds[i % len(kinds)], incidents[i % len(incidents)]
        if kind == "message":
            return fake.slack.message(inc["channel"], USER, f"chatter {i}")
        if kind == "click":
            return fake.slack.click("card_post_update", inc["incident"], inc["channel"],
                                    inc["card_ts"], CLICKERS[i % len(CLICKERS)])
        if kind == "declare":
            return fake.slack.slash(f"declare Bench mix {i}", GENERAL, USER)
        return fake.slack.slash("update" if kind == "update" else f"note bench {i}",
                                inc["channel"], USER)

    sent = bot.send([lambda i=i: make(i) for i in range(int(rate * seconds))], rate=rate,
                    timeout=10)
    ms: dict[str, list[float]] = {s.kind: [] for s in sent}
    for s in sent:
        ms[s.kind].append(s.latency * 1000 if s.status == 200 and s.latency else math.inf)
    every = [v for values in ms.values() for v in values]
    return {"sent": len(sent), "ok": sum(v < math.inf for v in every), "p50_ms": pct(every, 50),
            "p99_ms": pct(every, 99), "max_ms": max(every),
            "p99_ms_by_kind": {kind: pct(values, 99) for kind, values in ms.items()}}


def ingest(fake: Fake, bot: Bot, url: str, incidents: list[dict[str, str]],
           count: int) -> dict[str, Any]:
    """Channel messages, 16 in flight, then Slack redelivering 1 in 50; the rate counts until
    the last message is in `timeline_events`."""
    marker = f"ingest {uuid.uuid4().hex[:8]}"
    messages = [fake.slack.message(incidents[i % len(incidents)]["channel"], USER,
                                   f"{marker} {i}") for i in range(count)]
    requests = messages + [load.retry(m) for m in messages[:count // 50]]
    started = time.perf_counter()
    sent = bot.send([lambda r=r: r for r in requests], concurrency=16)
    rows = distinct = 0
    stored_s = changed = time.perf_counter() - started
    while distinct < count and time.perf_counter() - started - changed < 10:
        if (now := seed.count_messages(url, marker))[1] != distinct:
            changed = stored_s = time.perf_counter() - started
        rows, distinct = now
        time.sleep(0.05)
    return {"messages": count, "redelivered": len(requests) - count, "rows": rows,
            "distinct": distinct, "answered_200": sum(s.status == 200 for s in sent),
            "stored_s": stored_s, "per_s": distinct / stored_s}


def chain(posts: list[list[float]], declared: float, interval: float, start: float,
          end: float) -> tuple[list[float], int]:
    """Lags of one incident's reminders due in [start, end - 2 s], and how many of those were
    not posted by `end` (so are more than 2 s late, or never come).
    A reminder is due an interval after the declaration (its `conversations.create` reaching
    Slack), then an interval after the previous reminder reached Slack (or was due)."""
    lags, anchor, missed = [], declared, 0
    for arrived, answered in sorted(posts):
        if start <= anchor + interval <= end - 2:
            lags.append(answered - anchor - interval)
        anchor = arrived
    while (anchor := anchor + interval) <= end - 2:
        missed += anchor >= start
    return lags, missed


def reminders(fake: Fake, workdir: Path, kind: str, count: int, watch_s: float) -> dict[str, Any]:
    """`count` open incidents on a 6 s reminder interval (SEV3), watched for `watch_s`."""
    with seed.database(kind, workdir) as url:
        bot = Bot(fake, url, workdir, REMINDER_SEV3_MINUTES="0.1")
        try:
            fake("reset", {})
            declared = declare(fake, bot, count, rate=50, timeout=120)["declared"]
            start = time.time()  # every incident is declared (or 120 s have passed)
            time.sleep(watch_s)
            state, end = fake("state"), time.time()
        finally:
            bot.stop()
    lags, missed = [], 0
    for meta in (state["channels"].get(d.get("channel"), {}) for d in declared):
        if "asked" in meta:
            more, never = chain(meta["reminders"], meta["asked"], 6.0, start, end)
            lags, missed = lags + more, missed + never
    return {"incidents": count, "ready": sum("ready_s" in d for d in declared),
            "declaring_s": start - min(d["sent"] for d in declared),
            "watch_s": end - start, "due": len(lags) + missed, "missed": missed,
            "within_2s": sum(lag <= 2 for lag in lags), "lag_p50_s": pct(lags, 50),
            "lag_p99_s": pct(lags, 99), "posted": len(lags),
            "topic_calls": state["topic_calls"], "topic_noops": state["topic_noops"]}


def big(fake: Fake, workdir: Path, kind: str, count: int, due: int = 300,
        window_s: float = 15) -> dict[str, Any]:
    """`count` open incidents seeded into the database: start-up until /healthz, while `due`
    of their reminders fall due evenly over `window_s`, from about 8 s after the spawn."""
    with seed.database(kind, workdir) as url:
        subprocess.run([sys.executable, str(ROOT / "app.py"), "--migrate"], cwd=workdir,
                       env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"},
                       check=True, capture_output=True)
        channels = fake("channels", {"prefix": "big", "count": count})["channels"]
        first = time.time() + 10  # seeding takes about 2 s
        due_at = [first + window_s * i / due for i in range(due)]
        seed.seed_incidents(url, channels, USER, due_at + [first + 86400] * (count - due))
        fake("reset", {})
        bot = Bot(fake, url, workdir)
        try:
            while time.time() < first + window_s + 20:
                time.sleep(1)
                state = fake("state")["channels"]
                if sum(bool(state.get(c["id"], {}).get("reminders")) for c in channels) >= due:
                    break
        finally:
            bot.stop()
    lags = [state[c["id"]]["reminders"][0][1] - at if state.get(c["id"], {}).get("reminders")
            else math.inf for c, at in zip(channels, due_at, strict=False)]
    return {"incidents": count, "startup_s": bot.startup_s, "due": due,
            "posted": sum(lag < math.inf for lag in lags), "lag_p50_s": pct(lags, 50),
            "lag_p99_s": pct(lags, 99)}


# -- orchestration and the table -------------------------------------------------------


def attempt(out: dict[str, Any], name: str, phase: Callable[[], Any]) -> Any:
    """Run one phase; one that breaks is recorded as such and the others still run."""
    log(name)
    try:
        out[name] = phase()
    except Exception as exc:  # report it and go on
        log(f"{name} failed: {exc!r}")
        text = " ".join(str(exc).split()).replace("|", "/")  # one line, for a table cell
        out[name] = {"error": f"{type(exc).__name__}: {text[:200]}"}
    return out[name]


def on_database(kind: str, first: bool, fake: Fake, workdir: Path, p: dict[str, Any],
                out: dict[str, Any]) -> None:
    """One bot on a fresh database: declarations and clicks (first database only), acks at
    100/s, ingest, memory; then, with Slack answering after 1 s, clicks and acks."""
    with seed.database(kind, workdir) as url:
        bot = Bot(fake, url, workdir)
        try:
            time.sleep(1)
            memory = {"startup_s": bot.startup_s, "after_start_mib": bot.rss_mib()}
            if first:
                attempt(out, "declare single", lambda: declare(fake, bot, 1, p["singles"]))
            burst = attempt(out, f"declare 10 {kind}", lambda: declare(fake, bot, 10))
            incidents = [{"channel": d["channel"], **d["meta"]} for d in
                         burst.get("declared", []) if "card_ts" in d.get("meta", {})]
            if not incidents:
                raise RuntimeError(f"no incident could be declared on {kind}")
            if first:
                attempt(out, "clicks 150 ms", lambda: clicks(fake, bot, incidents[0], LATENCY))
            fake.drain()
            attempt(out, f"ack {kind} 150 ms", lambda: ack_mix(fake, bot, incidents, p["ack_s"]))
            fake.drain()
            attempt(out, f"ingest {kind}", lambda: ingest(fake, bot, url, incidents,
                                                                    p["ingest"]))
            fake.drain()
            time.sleep(1)
            out[f"memory {kind}"] = memory | {"after_run_mib": bot.rss_mib()}
            if first:
                attempt(out, "clicks 1 s", lambda: clicks(fake, bot, incidents[-1], 1.0))
            fake.latency(1.0)
            attempt(out, f"ack {kind} 1 s", lambda: ack_mix(fake, bot, incidents, p["ack_s"]))
        finally:
            fake.latency(LATENCY)
            bot.stop(timeout=5)


# (key, phase, budget, target, measured, pass?); with {db} in the phase: once per database
BUDGETS = [
    ("1a{n}", "ack {db} 150 ms", "1. ack p99, {DB}, 100 req/s mixed, Slack answering in 150 ms",
     "< 50 ms, all answered", "{p99_ms:.1f} ms (p50 {p50_ms:.1f}); {ok}/{sent} answered 200",
     lambda d: d["p99_ms"] < 50 and d["ok"] == d["sent"]),
    ("1b{n}", "ack {db} 1 s", "1. ack p99, {DB}, 100 req/s mixed, Slack answering in 1 s",
     "< 100 ms, all answered", "{p99_ms:.1f} ms (p50 {p50_ms:.1f}); {ok}/{sent} answered 200",
     lambda d: d["p99_ms"] < 100 and d["ok"] == d["sent"]),
    ("2a", "declare single", "2. declaration ready, one at a time (median of {singles}), {DB}",
     f"≤ {1.5 * CRITICAL:.3f} s (1.5 × 3 × 150 ms)", "{median_s:.2f} s; {ready}/{count} ready",
     lambda d: d["median_s"] <= 1.5 * CRITICAL),
    ("2b{n}", "declare 10 {db}", "2. declaration ready, 10 at once (p95), {DB}",
     f"≤ {2 * CRITICAL:.2f} s (2 × 3 × 150 ms)", "{p95_s:.2f} s; {ready}/{count} ready",
     lambda d: d["p95_s"] <= 2 * CRITICAL),
    ("3a", "clicks 150 ms", "3. 20 clicks on \"Post update\" at once, Slack in 150 ms: "
     "`views.open` p95", "< 1 s, every modal opens", "{p95_s:.2f} s (p50 {p50_s:.2f}); "
     "{opened}/{clicks} opened, {expired} triggers expired",
     lambda d: d["p95_s"] < 1 and d["opened"] == d["clicks"]),
    ("3b", "clicks 1 s", "3. 20 clicks on \"Post update\" at once, Slack in 1 s: "
     "`views.open` p95", "< 2.5 s, every modal opens", "{p95_s:.2f} s (p50 {p50_s:.2f}); "
     "{opened}/{clicks} opened, {expired} triggers expired",
     lambda d: d["p95_s"] < 2.5 and d["opened"] == d["clicks"]),
    ("4", "reminders", "4. `conversations.setTopic` calls changing nothing, in the reminder "
     "run", "0", "{topic_noops} of {topic_calls} calls", lambda d: d["topic_noops"] == 0),
    ("5{n}", "ingest {db}", "5. channel messages stored per second, {DB}",
     "≥ 300/s, none lost or doubled", "{per_s:.0f}/s; {distinct}/{messages} stored, "
     "{doubled} doubled ({redelivered} redelivered)",
     lambda d: d["per_s"] >= 300 and d["rows"] == d["distinct"] == d["messages"]),
    ("6a", "reminders", "6. reminders: {reminded} open incidents every 6 s, {watch_s} s watch",
     "each within 2 s of due", "{within_2s}/{due} within 2 s; {missed} not posted by the end; "
     "lag of the {posted} posted: p99 {lag_p99_s:.2f} s, p50 {lag_p50_s:.2f} s",
     lambda d: d["within_2s"] == d["due"] > 0),
    ("6b", "10,000 incidents", "6. 10,000 open incidents seeded: start-up (spawn → /healthz "
     "200)", "< 5 s", "{startup_s:.2f} s", lambda d: d["startup_s"] < 5),
    ("6c", "10,000 incidents", "6. 10,000 open incidents seeded: reminder lag p99 (300 due "
     "over 15 s)", "< 1 s", "{lag_p99_s:.2f} s (p50 {lag_p50_s:.2f} s); "
     "{posted}/{due} posted", lambda d: d["lag_p99_s"] < 1),
    ("7{n}", "memory {db}", "7. memory at rest (RSS of the bot's processes), {DB}", "< 100 MB",
     "{after_start_mib:.0f} MB after start, {after_run_mib:.0f} MB after the run",
     lambda d: max(d["after_start_mib"], d["after_run_mib"]) < 100),
]


def table(out: dict[str, Any], dbs: list[str], p: dict[str, Any]) -> str:
    rows = []
    for key, phase, budget, target, measured, passed in BUDGETS:
        for n, db in enumerate(dbs if "{db}" in phase else dbs[:1]):
            names = {**p, "n": n, "db": db, "DB": NAMES[db]}
            data, row = out.get(phase.format(**names)), (key.format(**names),
                                                         budget.format(**names), target)
            if not data or "error" in data:
                broke = data or out.get(f"on {db}") or {}  # the phase, or its database's run
                rows.append((*row, broke.get("error", "not run"), "not measured"))
                continue
            data = {**data, "doubled": data.get("rows", 0) - data.get("distinct", 0)}
            rows.append((*row, measured.format(**data).replace("inf s", "never"),
                         "pass" if passed(data) else "**FAIL**"))
    return "\n".join(["| budget | target | measured | result |", "| --- | --- | --- | --- |"]
                     + [f"| {b} | {t} | {m} | {r} |" for _, b, t, m, r in sorted(rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs: about 1.5 minutes")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "last-run.json")
    args = parser.parse_args(argv)
    p = QUICK if args.quick else FULL
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if CORES is not None:
        os.sched_setaffinity(0, CORES[0])
    out: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "profile": p,
                           "databases": dbs, "cores (harness, bot)": str(CORES)}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="incidentbot-bench-") as tmp:
        fake = Fake(Path(tmp))
        try:
            for n, kind in enumerate(dbs):
                attempt(out, f"on {kind}", lambda n=n, kind=kind: on_database(
                    kind, n == 0, fake, Path(tmp), p, out))
            attempt(out, "reminders", lambda: reminders(
                fake, Path(tmp), dbs[0], p["reminded"], p["watch_s"]))
            out["10,000 incidents"] = attempt(out, "10,000 incidents", lambda: big(
                fake, Path(tmp), dbs[0], p["big"])) if p["big"] else {"error": "skipped (--quick)"}
        finally:
            fake.proc.terminate()
            fake.proc.wait(10)
    out["seconds"] = time.monotonic() - began
    args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(table(out, dbs, p))
    log(f"done in {out['seconds']:.0f} s; raw figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
