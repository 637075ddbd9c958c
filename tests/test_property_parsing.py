"""Property-based tests (hypothesis) of the command parser, the view-submission readers and
the Block Kit builders: random text, Unicode, Slack markup, 4,000-character inputs and
missing fields never raise anything but a clear `UsageError`, and user text never reaches
`mrkdwn` unescaped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from incidentbot.core.comms import drafts
from incidentbot.models import Incident, RoleAssignment, StatusUpdate
from incidentbot.slack import blocks, reports, views
from incidentbot.slack.commands import UsageError, parse
from incidentbot.slack.forms import (
    element_value,
    next_update_minutes,
    read_metadata,
    update_form_errors,
    view_values,
)

MARKUP = st.sampled_from([
    "<@U123ABC|alice>", "<@U123ABC>", "<#C123|general>", "<!channel>", "<!here>",
    "<!everyone>", "<https://evil.example|click>", "<!subteam^S123>", "&amp;", "*bold*",
    "`code`", "```", ">", "<", "&", "\u202e", "\x00", "🔥", "é", "--drill", "due",
    "2026-02-30", "P0", "SEV1", "sev9", "@bob", "|", "\n",
])
WORDS = st.sampled_from([
    "declare", "role", "ic", "scribe", "severity", "status", "mitigated", "resolved",
    "update", "note", "timeline", "resolve", "reopen", "postmortem", "action", "actions",
    "comms", "page", "stats", "list", "help", "30", "-1", "1e9",
])
TOKENS = st.one_of(MARKUP, WORDS, st.text(max_size=30))
COMMAND_TEXT = st.one_of(
    st.text(max_size=4000),
    st.lists(TOKENS, max_size=12).map(" ".join),
    st.builds(lambda w, rest: f"{w} {rest}", WORDS, st.lists(TOKENS, max_size=8).map(" ".join)),
)
USER_TEXT = st.one_of(st.text(max_size=4000), st.lists(st.one_of(MARKUP, st.text(max_size=20)),
                                                       max_size=40).map(" ".join))
RAW_MENTION = ("<!channel>", "<!here>", "<!everyone>", "<https://evil.example|click>")


@settings(max_examples=400, deadline=None)
@given(COMMAND_TEXT)
def test_parser_answers_every_text_with_a_command_or_a_clear_usage_error(text: str) -> None:
    try:
        parse(text)
    except UsageError as exc:
        assert str(exc) and "/incident" in str(exc)


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=50)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_view_readers_never_raise_on_malformed_views(view: Any) -> None:
    for candidate in (view if isinstance(view, dict) else {"state": view},
                      {"state": {"values": view}}, {"state": {"values": {"b": view}}}):
        values = view_values(candidate)
        assert isinstance(update_form_errors(values), dict)
        next_update_minutes(values)
    metadata = read_metadata({"private_metadata": json.dumps(view)})
    assert isinstance(metadata, dict)
    if isinstance(view, dict):
        element_value(view)


@settings(max_examples=150, deadline=None)
@given(USER_TEXT, USER_TEXT, USER_TEXT)
def test_builders_escape_user_text_and_fit_slack_limits(title: str, description: str,
                                                        impact: str) -> None:
    moment = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    incident = Incident(id=1, title=title[:200] or "t", description=description,
                        service=impact[:120], severity="SEV2", status="investigating",
                        is_private=False, is_drill=False, channel_id="C1", channel_name="inc-1",
                        declared_by="UALICE", declared_at=moment, next_update_due_at=moment)
    incident.roles = [RoleAssignment(role="ic", user_id="UALICE", assigned_by="UALICE",
                                     assigned_at=moment)]
    update = StatusUpdate(id=1, incident_id=1, author_id="UBOB", severity="SEV2",
                          status="mitigated", impact=impact, current_action=description,
                          eta=title[:200], next_update_at=moment, posted_at=moment)
    produced = [
        blocks.incident_card(incident, update),
        reports.key_events_blocks(incident, []),
        reports.comms_blocks(incident, drafts(incident, update, moment)),
        [{"type": "section", "text": {"type": "mrkdwn", "text": t}} for t in (
            blocks.status_update_text(incident, update), blocks.note_text("UBOB", description),
            blocks.all_clear_text(incident), blocks.escalation_text(incident, 42))],
    ]
    for message in produced:
        assert len(message) <= 50
        for text in mrkdwn_texts(message):
            assert len(text) <= 3000 or text.startswith("*[")  # updates are messages, 40k
            for raw in RAW_MENTION:
                assert raw not in text
        headers = [b["text"]["text"] for b in message if b.get("type") == "header"]
        assert all(len(h) <= 150 for h in headers)
    modal = views.declare_modal({"response_url": "x"}, title=title[:200])
    assert len(modal["blocks"]) <= 100 and len(modal["private_metadata"]) <= 3000


def mrkdwn_texts(node: object) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            found.append(str(node["text"]))
        for value in node.values():
            found += mrkdwn_texts(value)
    elif isinstance(node, list):
        for value in node:
            found += mrkdwn_texts(value)
    return found


FORM_FIELDS = [blocks.STATUS, blocks.IMPACT, blocks.CURRENT_ACTION, blocks.NEXT_UPDATE,
               blocks.ETA, blocks.TITLE, blocks.SEVERITY]
ELEMENT = st.fixed_dictionaries({"type": st.sampled_from(
    ["plain_text_input", "static_select", "number_input", "checkboxes", "users_select",
     "datepicker", "mystery"])}, optional={
    "value": JSONISH, "selected_option": JSONISH, "selected_options": JSONISH,
    "selected_user": JSONISH, "selected_date": JSONISH})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FORM_FIELDS), ELEMENT, max_size=len(FORM_FIELDS)))
def test_update_form_validation_survives_any_element_values(fields: dict[str, Any]) -> None:
    view = {"state": {"values": {name: {name: element} for name, element in fields.items()}}}
    values = view_values(view)
    errors = update_form_errors(values)
    assert set(errors) <= {blocks.STATUS, blocks.IMPACT, blocks.CURRENT_ACTION,
                           blocks.NEXT_UPDATE}
    assert all(isinstance(message, str) and message for message in errors.values())
