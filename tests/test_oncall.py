"""On-call schedules: a weekly rotation with overrides; `/incident oncall`; pages go to
whoever is on call when the page starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from incidentbot.core.services import CatalogError, load_catalog
from tests.conftest import ALICE, BOB, CAROL, bot_running, make_settings
from tests.fakeslack import FakeSlack
from tests.helpers import eventually
from tests.test_declare_e2e import GENERAL, answer
from tests.test_paging_e2e import declare_for_checkout, dms

MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def catalog(tmp_path: Path, starts: datetime, overrides: str = "") -> str:
    path = tmp_path / "services.yaml"
    path.write_text(f"""
services:
  - name: checkout
    escalation: {{manager: {ALICE}}}
    oncall:
      rotation: [{BOB}, {CAROL}, UDAVE]
      starts: {starts.isoformat()}
      shift_days: 7
      overrides: [{overrides}]
""")
    return str(path)


def test_the_rotation_at_three_instants_and_an_override(tmp_path: Path) -> None:
    holiday = (f"{{user: UERIN, from: {(MONDAY + timedelta(days=15)).isoformat()}, "
               f"to: {(MONDAY + timedelta(days=16)).isoformat()}}}")
    [service] = load_catalog(catalog(tmp_path, MONDAY, holiday)).services
    assert service.oncall is not None
    at = service.oncall.on_call
    assert at(MONDAY + timedelta(hours=1)) == (BOB, CAROL)  # week 1
    assert at(MONDAY + timedelta(days=8)) == (CAROL, "UDAVE")  # week 2
    assert at(MONDAY + timedelta(days=22)) == (BOB, CAROL)  # week 4: round again
    assert at(MONDAY + timedelta(days=15, hours=2)) == ("UERIN", BOB)  # the override
    path = service.escalation_at(MONDAY + timedelta(days=8))
    assert (path.primary, path.secondary, path.manager) == (CAROL, "UDAVE", ALICE)


@pytest.mark.parametrize(("oncall", "says"), [
    ("{rotation: [], starts: 2026-01-05T09:00:00Z}", "rotation must be a list of user IDs"),
    ("{rotation: [UBOB], starts: soon}", "starts must be a time"),
    ("{rotation: [UBOB], starts: 2026-01-05T09:00:00Z, shift_days: 0}", "shift_days"),
    ("{rotation: [UBOB], starts: 2026-01-05T09:00:00Z, overrides: [{user: UX, "
     "from: 2026-01-06T00:00:00Z, to: 2026-01-05T00:00:00Z}]}", "must end after it starts"),
])
def test_a_bad_schedule_is_named(tmp_path: Path, oncall: str, says: str) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(f"services:\n  - name: checkout\n    oncall: {oncall}\n")
    with pytest.raises(CatalogError, match=says):
        load_catalog(str(path))


def test_oncall_names_who_is_on_now_and_a_page_goes_to_the_override(
        database_url: str, fake: FakeSlack, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    # CAROL's week (the second shift) holds now; BOB overrides her for this hour
    starts = now - timedelta(days=7, hours=1)
    override = (f"{{user: {BOB}, from: {(now - timedelta(minutes=5)).isoformat()}, "
                f"to: {(now + timedelta(hours=1)).isoformat()}}}")
    settings = make_settings(database_url, fake, services_file=catalog(tmp_path, starts, override))
    with bot_running(settings, fake) as running:
        running.driver.command("oncall checkout", user_id=ALICE, channel_id=GENERAL)
        said = answer(running, running.driver.last_response_url, "On call now")
        assert f"primary <@{BOB}>" in said and "secondary <@UDAVE>" in said
        assert f"manager <@{ALICE}>" in said
        incident = declare_for_checkout(running)
        running.driver.command("page", user_id=ALICE, channel_id=incident.channel_id)
        eventually(lambda: dms(fake, BOB))
        assert dms(fake, CAROL) == []
