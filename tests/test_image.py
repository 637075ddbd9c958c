"""The container image builds and starts with its defaults: non-root, SQLite in /data,
/healthz answering on PORT. Needs a Docker daemon (and the base image); skipped otherwise."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import BOT_TOKEN, SIGNING_SECRET
from tests.fakeslack import FakeSlack
from tests.process import ROOT, free_port

IMAGE = "incidentbot:test"


def docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def docker_problem() -> str | None:
    try:
        info = docker("info", timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker is not installed or does not answer ({exc})"
    return None if info.returncode == 0 else "no Docker daemon: " + info.stderr.strip()[-200:]


def test_the_image_builds_and_starts_non_root_with_its_default_database() -> None:
    problem = docker_problem()
    if problem:
        pytest.skip(problem)
    built = docker("build", "-t", IMAGE, str(ROOT))
    if built.returncode != 0 and "pull" in built.stderr.lower():
        pytest.skip("the base image cannot be pulled here: " + built.stderr.strip()[-200:])
    assert built.returncode == 0, built.stderr
    port = free_port()
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        started = docker("run", "-d", "--rm", "--network", "host", "-e", f"PORT={port}",
                         "-e", f"SLACK_BOT_TOKEN={BOT_TOKEN}",
                         "-e", f"SLACK_SIGNING_SECRET={SIGNING_SECRET}",
                         "-e", f"SLACK_API_URL={fake.api_url}", IMAGE)
        assert started.returncode == 0, started.stderr
        container = started.stdout.strip()
        try:
            assert healthy(port), docker("logs", container).stdout
            user = docker("exec", container, "id", "-u").stdout.strip()
            assert user != "0"
            assert docker("exec", container, "ls", "/data/incidentbot.db").returncode == 0
        finally:
            docker("stop", container)


def healthy(port: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200 and json.loads(r.read())["ok"]:
                    return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.5)
    return False
