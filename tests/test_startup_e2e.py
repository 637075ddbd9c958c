"""Settings checked at start: each bad one is one sentence naming it, exit code 2, no
traceback; `--help` and `check` work without serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BOT_TOKEN, SIGNING_SECRET
from tests.fakeslack import FakeSlack
from tests.process import ROOT


def run_app(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SLACK_BOT_TOKEN": BOT_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}", **settings}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("LOG_LEVEL", "bogus", "LOG_LEVEL: use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("PORT", "-1", "PORT: Input should be greater than or equal to 0"),
    ("PORT", "99999", "PORT: Input should be less than or equal to 65535"),
    ("POSTMORTEM_TEMPLATE", "/nonexistent.j2", "POSTMORTEM_TEMPLATE: /nonexistent.j2 is not a"),
    ("DATABASE_URL", "mysql://bot@127.0.0.1/incidents", "DATABASE_URL: mysql is not supported"),
    ("DATABASE_URL", "sqlite:////nonexistent-dir/bot.db",
     "DATABASE_URL: the SQLite file's directory /nonexistent-dir does not exist"),
    ("SLACK_API_URL", "http://127.0.0.1:9/api/",
     "Slack could not be reached at SLACK_API_URL (http://127.0.0.1:9/api/)"),
])
def test_a_bad_setting_is_one_sentence_and_exit_2(
        tmp_path: Path, setting: str, value: str, says: str) -> None:
    result = run_app(tmp_path, **{setting: value})
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_template_that_does_not_render_is_refused(tmp_path: Path) -> None:
    template = tmp_path / "postmortem.md.j2"
    template.write_text("# {{ incident.title }} {{ no_such_thing.field }}\n")
    result = run_app(tmp_path, POSTMORTEM_TEMPLATE=str(template))
    assert result.returncode == 2
    assert "does not render a sample incident" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_commands_and_settings(tmp_path: Path) -> None:
    result = run_app(tmp_path, "--help")
    assert result.returncode == 0
    for word in ("check", "serve", "--migrate", "SLACK_BOT_TOKEN", "DATABASE_URL",
                 "JOB_LEASE_SECONDS"):
        assert word in result.stdout


def test_check_validates_database_and_tokens_without_serving(tmp_path: Path) -> None:
    with FakeSlack(bot_token=BOT_TOKEN) as fake:
        good = run_app(tmp_path, "check", SLACK_API_URL=fake.api_url)
        bad = run_app(tmp_path, "check", SLACK_API_URL=fake.api_url,
                      SLACK_BOT_TOKEN="xoxb-wrong")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines() == ["database: ok", "SLACK_BOT_TOKEN: ok"]
    assert bad.returncode == 3
    assert "SLACK_BOT_TOKEN: Slack refused the bot token (invalid_auth)" in bad.stdout
    assert (tmp_path / "bot.db").exists()  # migrated, and nothing served
