"""The service catalog: runbooks bookmarked, owners invited; malformed files named precisely."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from incidentbot.core.services import CatalogError, load_catalog
from incidentbot.slack import blocks
from tests.conftest import ALICE, BOB, CAROL, RunningBot
from tests.helpers import eventually
from tests.process import ROOT
from tests.test_declare_e2e import GENERAL

CATALOG = f"""
services:
  - name: checkout
    owners: [{BOB}, {CAROL}]
    runbook: https://wiki.example.com/runbooks/checkout
    default_severity: SEV2
    escalation: {{primary: {BOB}, secondary: {CAROL}, manager: {ALICE}}}
  - name: search
    runbook: https://wiki.example.com/runbooks/search
"""


@pytest.fixture
def bot_settings(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "services.yaml"
    path.write_text(CATALOG)
    return {"services_file": str(path)}


def test_declaring_for_a_service_bookmarks_runbook_and_invites_owners(
    running: RunningBot
) -> None:
    driver, fake = running.driver, running.fake
    driver.command("declare", user_id=ALICE, channel_id=GENERAL)
    view = eventually(fake.last_view)
    assert "checkout" in str(view["blocks"]) and "search" in str(view["blocks"])
    driver.submit_view(str(view["id"]), {blocks.TITLE: "Checkout 500s", blocks.SEVERITY: "SEV2",
                                         blocks.SERVICE: "checkout"}, user_id=ALICE)
    channel = eventually(lambda: next((c for c in fake.channels()
                                       if c["name"].endswith("checkout-500s")), None))
    bookmarks = eventually(lambda: fake.bookmarks(channel["id"]))
    assert bookmarks[0]["link"] == "https://wiki.example.com/runbooks/checkout"
    eventually(lambda: {ALICE, BOB, CAROL} <= set(fake.channel(channel["id"])["members"]))
    eventually(lambda: [m for m in fake.messages(channel["id"])
                        if "https://wiki.example.com/runbooks/checkout" in m.get("text", "")])


def test_example_catalog_in_the_repo_is_valid() -> None:
    catalog = load_catalog(str(ROOT / "services.example.yaml"))
    assert catalog.get("api-gateway") is not None and catalog.get("DynamoDB") is not None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("services:\n  - name: a\n    runbook: ftp://x\n", "line 2: the runbook of 'a' must be"),
        ("services:\n  - name: a\n  - owners: [U1]\n", "line 3: the service has no name"),
        ("services:\n  - name: a\n    colour: red\n", "line 2: unknown field(s) colour"),
        ("services:\n  - name: a\n    owners: [bob]\n", "line 2: owners of 'a' must be"),
        ("services:\n  - name: a\n  - name: A\n", "line 3: service 'A' is listed twice"),
        ("services: [\n", "not valid YAML"),
        ("services:\n  - name: a\n    default_severity: SEV9\n", "default_severity of 'a'"),
        ("nothing: here\n", "line 1: expected a top-level 'services:' list"),
    ],
)
def test_malformed_catalogs_name_file_line_and_problem(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as err:
        load_catalog(str(path))
    assert str(path) in str(err.value) and says in str(err.value)


def test_bot_refuses_to_start_with_a_malformed_catalog(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("services:\n  - name: checkout\n    runbook: not-a-url\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SLACK_BOT_TOKEN": "xoxb-x",
           "SLACK_SIGNING_SECRET": "s", "SERVICES_FILE": str(path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "SLACK_API_URL": "http://127.0.0.1:9/api/"}
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{path}, line 2: the runbook of 'checkout' must be an http(s) URL" in result.stderr
    assert "Traceback" not in result.stderr
