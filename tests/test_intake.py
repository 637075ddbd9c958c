"""`incidentbot.slack.intake`: verify before parsing, parse forms right, refuse bad shapes."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_bolt import App, BoltRequest
from slack_bolt.authorization import AuthorizeResult

from incidentbot.slack.intake import (
    Malformed,
    Refusal,
    admit,
    bolt_request,
    parse,
    validate,
    verify,
)

SECRET = "intake-test-secret"
NOW = 1_700_000_000.0
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"


def signed(raw: bytes | str, content_type: str = FORM, *, at: float = NOW,
           secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    """The body and the headers Slack sends with it, signed as Slack signs (HMAC of bytes)."""
    body = raw.encode() if isinstance(raw, str) else raw
    timestamp = str(int(at))
    base = b"v0:" + timestamp.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return body, {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp,
                  "X-Slack-Signature": signature}


def command_body(text: str) -> str:
    return urlencode({
        "token": "verification-token", "team_id": "T0TEST", "team_domain": "acme",
        "channel_id": "C0INC", "channel_name": "inc-20240101-db", "user_id": "U0ALICE",
        "user_name": "alice", "command": "/incident", "text": text, "api_app_id": "A0TEST",
        "is_enterprise_install": "false",
        "response_url": "https://hooks.slack.com/commands/T0TEST/1/abc",
        "trigger_id": "1.2.abc"})


def block_actions(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0ALICE", "username": "alice", "name": "alice", "team_id": "T0TEST"},
        "api_app_id": "A0TEST", "token": "verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000100",
                      "channel_id": "C0INC", "is_ephemeral": False},
        "trigger_id": "1.2.abc", "team": {"id": "T0TEST", "domain": "acme"},
        "enterprise": None, "is_enterprise_install": False,
        "channel": {"id": "C0INC", "name": "inc-20240101-db"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": "card"},
        "state": {"values": {}}, "response_url": "https://hooks.slack.com/actions/T0TEST/1/x",
        "actions": [{"action_id": "card_update", "block_id": "b1", "type": "button",
                     "text": {"type": "plain_text", "text": "Post update", "emoji": True},
                     "value": "7", "action_ts": "1700000001.000200"}],
    }
    payload.update(changes)
    return payload


def view_submission(**changes: Any) -> dict[str, Any]:
    view = {"id": "V0FORM", "team_id": "T0TEST", "type": "modal", "blocks": [],
            "private_metadata": '{"incident_id": 7}', "callback_id": "update_form",
            "state": {"values": {"status": {"status": {"type": "plain_text_input",
                                                       "value": "identified"}}}},
            "hash": "1700000000.abc", "app_id": "A0TEST", "bot_id": "B0BOT"}
    payload: dict[str, Any] = {
        "type": "view_submission", "team": {"id": "T0TEST", "domain": "acme"},
        "user": {"id": "U0ALICE", "name": "alice", "team_id": "T0TEST"},
        "api_app_id": "A0TEST", "token": "verification-token", "trigger_id": "1.2.abc",
        "view": view, "response_urls": [], "is_enterprise_install": False, "enterprise": None}
    payload.update(changes)
    return payload


def envelope(event: Any) -> dict[str, Any]:
    return {"token": "verification-token", "team_id": "T0TEST", "api_app_id": "A0TEST",
            "event": event, "type": "event_callback", "event_id": "Ev0ABC",
            "event_time": int(NOW), "context_team_id": "T0TEST",
            "authorizations": [{"enterprise_id": None, "team_id": "T0TEST",
                                "user_id": "U0BOT", "is_bot": True,
                                "is_enterprise_install": False}],
            "is_ext_shared_channel": False}


def message(**changes: Any) -> dict[str, Any]:
    event = {"type": "message", "channel": "C0INC", "user": "U0ALICE", "text": "db is back",
             "ts": "1700000002.000300", "event_ts": "1700000002.000300",
             "channel_type": "channel", "team": "T0TEST", "client_msg_id": "5f0c"}
    event.update(changes)
    return event


def form(payload: dict[str, Any] | str) -> str:
    return urlencode({"payload": payload if isinstance(payload, str) else json.dumps(payload)})


def admitted(raw: bytes | str, content_type: str = FORM) -> BoltRequest | Refusal:
    return admit(*signed(raw, content_type), SECRET, now=NOW)


# -- verification comes first ------------------------------------------------------------------

def test_unsigned_malformed_json_is_401_not_a_crash() -> None:
    body = b'{"type": "event_callback", "event": {'
    assert admit(body, {"Content-Type": JSON_TYPE}, SECRET, now=NOW) == Refusal(
        401, "unsigned request")


@pytest.mark.parametrize("age", [301, -301, 3600])
def test_stale_or_future_timestamp_is_401(age: int) -> None:
    body, headers = signed(json.dumps(envelope(message())), JSON_TYPE, at=NOW - age)
    assert verify(body, headers, SECRET, now=NOW) == Refusal(401, "stale timestamp")


@pytest.mark.parametrize("timestamp, signature", [
    ("soon", "v0=00"), ("9" * 5000, "v0=00"), (str(int(NOW)), "v0=é"), ("", "v0=00")])
def test_garbage_signature_headers_are_401(timestamp: str, signature: str) -> None:
    headers = {"x-slack-request-timestamp": timestamp, "x-slack-signature": signature}
    result = verify(b"{}", headers, SECRET, now=NOW)
    assert result is not None and result.status == 401


def test_wrong_secret_is_401_and_header_names_are_case_insensitive() -> None:
    body, headers = signed(command_body("list"), secret="someone-else")
    assert verify(body, headers, SECRET, now=NOW) == Refusal(401, "bad signature")
    body, headers = signed(command_body("list"))
    assert verify(body, {k.upper(): v for k, v in headers.items()}, SECRET, now=NOW) is None


def test_oversized_body_is_413_before_the_signature() -> None:
    assert admit(b"x" * (1024 * 1024 + 1), {}, SECRET, now=NOW) == Refusal(413, "body over 1 MiB")


# -- signed but malformed: 400 with the field named ----------------------------------------

@pytest.mark.parametrize("raw, content_type, named", [
    (b"payload=%7B\xff\xfe", FORM, "UTF-8"),
    (b"", FORM, "empty"),
    (b'{"type": "event_callback", "event": {', JSON_TYPE, "body is not JSON"),
    (b"[1, 2]", JSON_TYPE, "body is not a JSON object"),
    (form("{not json"), FORM, "payload is not JSON"),
    (form("[1]"), FORM, "payload is not a JSON object"),
    (form(block_actions(actions=[])), FORM, "actions must not be empty"),
    (form(block_actions(actions=[{"value": "7"}])), FORM, "actions[0].action_id is missing"),
    (form(block_actions(user="U0ALICE")), FORM, "user must be an object"),
    (form(view_submission(view="V0FORM")), FORM, "view must be an object"),
    (json.dumps(envelope(message(text=["db", "back"]))), JSON_TYPE,
     "event.text must be a string"),
    (json.dumps(envelope(message(user={"id": "U0ALICE"}))), JSON_TYPE,
     "event.user must be a string"),
    (json.dumps(envelope("message")), JSON_TYPE, "event must be an object"),
    (json.dumps(envelope(message(subtype="message_changed", message={"text": 5}))), JSON_TYPE,
     "event.message.text must be a string"),
    (json.dumps(envelope({"type": "reaction_added", "reaction": "pushpin",
                          "item": {"type": "message", "channel": "C0INC"}})), JSON_TYPE,
     "event.item.ts is missing"),
    (json.dumps({**envelope(message()), "authorizations": "all"}), JSON_TYPE,
     "authorizations must be a list"),
    (json.dumps({"type": ["event_callback"]}), JSON_TYPE, "type must be a string"),
    (urlencode({"command": "/incident", "text": "list"}), FORM, "user_id is missing"),
    (b"hello", "text/plain", "neither a command"),
])
def test_signed_malformed_bodies_are_400_naming_the_field(
        raw: bytes | str, content_type: str, named: str, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="incidentbot.slack.intake"):
        result = admitted(raw, content_type)
    assert isinstance(result, Refusal) and result.status == 400, result
    assert named in result.reason
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None


def test_unknown_event_types_and_extra_fields_pass() -> None:
    event = {"type": "app_home_opened", "user": {"odd": True}, "tab": 3}
    assert isinstance(admitted(json.dumps(envelope(event)), JSON_TYPE), BoltRequest)
    for body in ({"type": "app_rate_limited", "minute_rate_limited": 1},
                 {"type": "url_verification", "challenge": "3eZbrw", "token": "t"}):
        assert isinstance(admitted(json.dumps(body), JSON_TYPE), BoltRequest)
    assert isinstance(admitted(form(block_actions(new_field=[1, {}]))), BoltRequest)
    assert isinstance(admitted("ssl_check=1&token=verification-token"), BoltRequest)


# -- the form rule and the requests built ------------------------------------------------

def test_command_mentioning_payload_stays_a_command() -> None:
    raw = command_body("declare Payload service returns 500 on payload=x")
    assert BoltRequest(body=raw, headers={"content-type": FORM}).body == {}  # Bolt 1.30's bug
    assert parse(raw, FORM)["text"] == "declare Payload service returns 500 on payload=x"
    request = admitted(raw)
    assert isinstance(request, BoltRequest)
    assert request.body["command"] == "/incident"
    assert request.body["text"] == "declare Payload service returns 500 on payload=x"
    assert (request.context.user_id, request.context.channel_id) == ("U0ALICE", "C0INC")
    assert request.to_copyable().body == request.body  # lazy listeners get the same body


def test_block_actions_and_event_callback_give_bolt_requests() -> None:
    click = admitted(form(block_actions()))
    assert isinstance(click, BoltRequest)
    assert click.body["actions"][0]["action_id"] == "card_update"
    assert (click.context.user_id, click.context.channel_id) == ("U0ALICE", "C0INC")
    assert click.context.team_id == "T0TEST"
    submit = admitted(form(view_submission()))
    assert isinstance(submit, BoltRequest) and submit.body["view"]["callback_id"] == "update_form"
    event = admitted(json.dumps(envelope(message(thread_ts="1700000000.000100"))), JSON_TYPE)
    assert isinstance(event, BoltRequest)
    assert event.body["event"]["text"] == "db is back"
    assert (event.context.user_id, event.context.channel_id) == ("U0ALICE", "C0INC")
    assert event.context.thread_ts == "1700000000.000100"


def test_stored_request_rebuilds_with_lazy_headers() -> None:
    raw = command_body("declare payload queue stuck")
    request = bolt_request(raw, FORM, {"x-slack-bolt-lazy-only": "1",
                                       "x-slack-bolt-lazy-function-name": "declare_later"})
    assert request.lazy_only and request.lazy_function_name == "declare_later"
    assert request.content_type == FORM and request.raw_body == raw
    assert request.body["text"] == "declare payload queue stuck"
    with pytest.raises(Malformed, match="payload is not JSON"):
        bolt_request("payload=nope", FORM, {})


def test_socket_mode_request_takes_the_dict() -> None:
    body = block_actions()
    request = bolt_request(body, "", {"x-slack-bolt-lazy-only": ["1"]}, mode="socket_mode")
    assert request.mode == "socket_mode" and request.body is body and request.lazy_only
    assert request.context.user_id == "U0ALICE" and request.to_copyable().body == body
    with pytest.raises(ValueError, match="raw body"):
        bolt_request(body, "", {})


def incident_app(seen: list[str], done: threading.Event, **options: Any) -> App:
    """A Bolt app with an `/incident` listener that acks and a lazy part, as the bot's."""
    app = App(signing_secret=SECRET, process_before_response=False, **options,
              authorize=lambda **_: AuthorizeResult(enterprise_id=None, team_id="T0TEST",
                                                    bot_token="xoxb-t", bot_user_id="U0BOT",
                                                    bot_id="B0BOT"))

    def ack_it(ack: Any, command: dict[str, Any]) -> None:
        seen.append(f"ack {command['text']}")
        ack()

    def later(command: dict[str, Any]) -> None:
        seen.append(f"later {command['text']}")
        done.set()

    app.command("/incident")(ack=ack_it, lazy=[later])
    return app


def test_the_payload_command_reaches_the_listener_and_its_lazy_part() -> None:
    seen: list[str] = []
    done = threading.Event()
    app = incident_app(seen, done)
    raw, headers = signed(command_body("declare payload service returns 500"), at=time.time())
    request = admit(raw, headers, SECRET)
    assert isinstance(request, BoltRequest)
    assert app.dispatch(request).status == 200
    assert done.wait(5)
    assert seen == ["ack declare payload service returns 500",
                    "later declare payload service returns 500"]


def test_a_stored_request_replays_only_its_lazy_function() -> None:
    seen: list[str] = []
    done = threading.Event()
    app = incident_app(seen, done, request_verification_enabled=False)
    raw = command_body("declare payload service returns 500")
    request = bolt_request(raw, FORM, {"X-Slack-Bolt-Lazy-Only": "1",
                                       "X-Slack-Bolt-Lazy-Function-Name": "later"})
    assert app.dispatch(request).status == 200
    assert done.wait(5)
    assert seen == ["later declare payload service returns 500"]


# -- properties -------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400),
       content_type=st.sampled_from([FORM, JSON_TYPE, "text/plain", ""]))
def test_signed_arbitrary_bytes_never_raise(raw: bytes, content_type: str) -> None:
    result = admitted(raw, content_type)
    assert isinstance(result, BoltRequest) or result.status in (400, 413)


_KEYS = ["type", "event", "user", "channel", "team", "enterprise", "authorizations", "view",
         "actions", "text", "ts", "item", "message", "previous_message", "command",
         "response_urls", "thread_ts", "subtype", "id", "callback_id", "state", "values"]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    | st.sampled_from(["message", "event_callback", "block_actions", "view_submission",
                       "reaction_added", "member_joined_channel", "C0INC", "U0ALICE"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=8), as_form=st.booleans())
def test_signed_slack_like_objects_never_raise(body: dict[str, Any], as_form: bool) -> None:
    raw = form(body) if as_form else json.dumps(body)
    result = admitted(raw, FORM if as_form else JSON_TYPE)
    assert isinstance(result, BoltRequest) or result.status == 400
    if isinstance(result, BoltRequest):
        validate(result.body)  # what passed once passes again (stored requests are rebuilt)
