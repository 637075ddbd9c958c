"""Unit tests for the pure parts: names, parsing, severity, status rules, Block Kit builders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from incidentbot.core.naming import channel_name, slugify, with_suffix
from incidentbot.core.roles import Role
from incidentbot.core.severity import Severity, suggest_severity
from incidentbot.core.status import Status, allowed_next
from incidentbot.models import Incident, RoleAssignment
from incidentbot.slack import blocks, reminder_metadata, reports, views
from incidentbot.slack.commands import (
    AssignRole,
    Declare,
    Help,
    ListOpen,
    SetSeverity,
    SetStatus,
    UsageError,
    parse,
)

NAME_RULES = set("abcdefghijklmnopqrstuvwxyz0123456789-_")
DAY = datetime(2026, 11, 25, 2, 14, tzinfo=UTC)


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Checkout is DOWN!!", "checkout-is-down"),
        ("Paiement échoué — API 500", "paiement-echoue-api-500"),
        ("🔥🔥🔥", "incident"),
        ("   ", "incident"),
        ("db_primary failover", "db-primary-failover"),
    ],
)
def test_slugify(title: str, slug: str) -> None:
    assert slugify(title) == slug


def test_channel_name_follows_slack_rules_and_leaves_room_for_suffix() -> None:
    name = channel_name("inc", DAY, "x" * 300)
    assert name.startswith("inc-20261125-")
    assert set(name) <= NAME_RULES
    assert len(with_suffix(name, 50)) <= 80
    assert with_suffix("inc-20261125-db", 1) == "inc-20261125-db"
    assert with_suffix("inc-20261125-db", 3) == "inc-20261125-db-3"
    long = "a" * 80
    assert len(with_suffix(long, 12)) == 80 and with_suffix(long, 12).endswith("-12")


def test_slug_cuts_at_word_boundary() -> None:
    slug = slugify("payments api returns errors for every customer in europe and asia", 30)
    assert len(slug) <= 30 and not slug.endswith("-")
    assert slug == "payments-api-returns-errors"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("help", Help()),
        ("declare", Declare(title="")),
        ("declare   Checkout   is down ", Declare(title="Checkout is down")),
        ("DECLARE db down", Declare(title="db down")),
        ("role ic <@U123ABC|alice>", AssignRole(Role.IC, "U123ABC")),
        ("role commander <@W999>", AssignRole(Role.IC, "W999")),
        ("role sme <@U42AB>", AssignRole(Role.TECH, "U42AB")),
        ("severity sev1", SetSeverity(Severity.SEV1)),
        ("severity 2", SetSeverity(Severity.SEV2)),
        ("status Mitigated", SetStatus(Status.MITIGATED)),
        ("list", ListOpen()),
    ],
)
def test_parse_valid(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("launch rockets", "`launch` is not an incident command"),
        ("role", "Say which role and who"),
        ("role ic", "Say which role and who"),
        ("role wizard <@U1234>", "`wizard` is not a role"),
        ("role ic bob", "`bob` is not a user mention"),
        ("role ic @bob", "`@bob` is not a user mention"),
        ("role ic <!channel>", "`&lt;!channel&gt;` is not a person"),
        ("role ic <#C123|general>", "is not a person"),
        ("role ic <@U1> <@U2>", "one person per role"),
        ("severity", "Give one severity"),
        ("severity SEV9", "`SEV9` is not a severity"),
        ("status sleeping", "`sleeping` is not a status"),
        ("status closed", "not a status you can set"),
    ],
)
def test_parse_errors_name_the_problem_and_the_right_form(text: str, says: str) -> None:
    with pytest.raises(UsageError) as err:
        parse(text)
    assert says in str(err.value)
    assert "/incident" in str(err.value)


def test_decision_tree() -> None:
    assert suggest_severity([True]) is Severity.SEV1
    assert suggest_severity([False, True]) is Severity.SEV2
    assert suggest_severity([False, False, True]) is Severity.SEV2
    assert suggest_severity([False, False, False, True]) is Severity.SEV3
    assert suggest_severity([False, False, False, False, True]) is Severity.SEV4
    assert suggest_severity([]) is Severity.SEV3


def test_status_lifecycle_rules() -> None:
    assert Status.MITIGATED in allowed_next(Status.INVESTIGATING)
    assert Status.INVESTIGATING in allowed_next(Status.MITIGATED)  # a mitigation can fail
    assert allowed_next(Status.RESOLVED) == (Status.INVESTIGATING, Status.CLOSED)
    assert allowed_next(Status.CLOSED) == ()


def _incident(**fields: object) -> Incident:
    values: dict[str, object] = dict(
        id=7, title="Checkout <!channel> down & <https://evil.example|bank>",
        description="*bold* <@U1> & more", service="checkout", severity="SEV2",
        status="investigating", is_private=False, channel_id="C1", channel_name="inc-x",
        declared_by="UALICE", declared_at=DAY, next_update_due_at=None,
    )
    values.update(fields)
    incident = Incident(**values)
    incident.roles = [RoleAssignment(role="ic", user_id="UALICE", assigned_by="UALICE",
                                     assigned_at=DAY, relieved_at=None)]
    return incident


def test_card_escapes_user_text_and_fits_slack_limits() -> None:
    card = blocks.incident_card(_incident())
    dumped = json.dumps(card)
    mrkdwn = json.dumps(list(_mrkdwn_texts(card)))
    assert "<@U1>" not in mrkdwn and "&lt;@U1&gt;" in mrkdwn  # from the description
    assert card[0]["text"]["type"] == "plain_text"  # the title only appears as plain text
    assert len(card) <= 50
    for block in card:
        text = (block.get("text") or {}).get("text", "")
        assert len(text) <= 3000
    actions = [e["action_id"] for b in card if b["type"] == "actions" for e in b["elements"]]
    assert actions == [blocks.POST_UPDATE, blocks.ASSIGN_ROLE, blocks.CHANGE_SEVERITY,
                       blocks.CHANGE_STATUS, blocks.RESOLVE]
    assert "<@UALICE>" in dumped  # the IC is shown as a real mention


def _mrkdwn_texts(node: object):
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            yield node["text"]
        for value in node.values():
            yield from _mrkdwn_texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _mrkdwn_texts(value)


def test_card_with_huge_description_is_truncated() -> None:
    card = blocks.incident_card(_incident(description="x" * 10_000))
    assert all(len((b.get("text") or {}).get("text", "")) <= 3000 for b in card)


def test_topic_and_modals() -> None:
    incident = _incident()
    assert blocks.topic(incident) == "SEV2 · Investigating · IC: <@UALICE>"
    modal = views.declare_modal({"response_url": "x" * 500})
    assert modal["callback_id"] == blocks.DECLARE_VIEW
    assert len(modal["title"]["text"]) <= 24
    assert "Revenue directly impacted" in json.dumps(modal)
    for builder in (views.role_modal, views.severity_modal, views.status_modal):
        view = builder(incident, {"incident_id": 7})
        assert json.loads(view["private_metadata"]) == {"incident_id": 7}
        assert len(view["title"]["text"]) <= 24


def test_incident_list_caps_blocks() -> None:
    many = [_incident(id=i, channel_id=f"C{i}") for i in range(120)]
    listed = reports.incident_list(many, DAY)
    assert len(listed) <= 50
    assert "and 75 more" in json.dumps(listed)


def test_a_reminder_message_carries_its_claim_and_is_found_by_it() -> None:
    metadata = reminder_metadata.reminder_metadata("reminder:2026-11-25T02:14:00+00:00", 7)
    assert metadata == {"event_type": "incident_reminder", "event_payload": {
        "claim_key": "reminder:2026-11-25T02:14:00+00:00", "incident_id": 7}}
    others = [
        {"ts": "1.000005", "text": "no metadata"},
        {"ts": "1.000004", "metadata": {"event_type": "other_app", "event_payload":
                                        metadata["event_payload"]}},
        {"ts": "1.000003", "metadata": reminder_metadata.reminder_metadata("reminder:x", 7)},
        {"ts": "1.000002", "metadata": reminder_metadata.reminder_metadata(
            "reminder:2026-11-25T02:14:00+00:00", 8)},  # another incident's
        {"ts": "1.000001", "metadata": {"event_type": "incident_reminder",
                                        "event_payload": "reminder:x"}},  # malformed
    ]
    assert reminder_metadata.find_claimed(others, "reminder:2026-11-25T02:14:00+00:00", 7) is None
    read: list[str] = []

    def history() -> Iterator[dict[str, object]]:
        for message in [*others[:2], {"ts": "1.000009", "metadata": metadata}, *others[2:]]:
            read.append(str(message["ts"]))
            yield message

    assert reminder_metadata.find_claimed(
        history(), "reminder:2026-11-25T02:14:00+00:00", 7) == "1.000009"
    assert read == ["1.000005", "1.000004", "1.000009"]  # no further than the one found


def test_the_search_window_spans_the_claim_and_the_post_after_it() -> None:
    oldest, latest = reminder_metadata.search_window(DAY)
    assert reminder_metadata.slack_ts(DAY) == f"{DAY.timestamp():.6f}"
    assert float(oldest) == DAY.timestamp() - 60 and float(latest) == DAY.timestamp() + 600
