"""The fake Slack and the driver, exercised with the real slack_sdk and slack_bolt."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.models.metadata import Metadata
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from tests.driver import SlackDriver
from tests.fakeslack import FakeSlack, NotFound

TOKEN = "xoxb-test-token"
SECRET = "test-signing-secret"
ALICE, BOB = "UALICE", "UBOB"
FAST = FixedValueRetryIntervalCalculator(0.01)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(bot_token=TOKEN) as fake:
        fake.add_user(ALICE, "alice")
        fake.add_user(BOB, "bob")
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[])


def error_of(call: Any, *args: Any, **kwargs: Any) -> str:
    """Slack's error code for a call that must fail (always answered with HTTP 200)."""
    with pytest.raises(SlackApiError) as failure:
        call(*args, **kwargs)
    assert failure.value.response.status_code == 200
    return str(failure.value.response["error"])


def modal(**overrides: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal", "callback_id": "declare", "private_metadata": "C1",
        "title": {"type": "plain_text", "text": "Declare"},
        "submit": {"type": "plain_text", "text": "Declare"},
        "blocks": [
            {"type": "input", "block_id": "title", "label": {"type": "plain_text", "text": "T"},
             "element": {"type": "plain_text_input", "action_id": "title"}},
            {"type": "input", "block_id": "sev", "label": {"type": "plain_text", "text": "S"},
             "element": {"type": "static_select", "action_id": "sev", "options": [
                 {"text": {"type": "plain_text", "text": f"SEV{n}"}, "value": f"SEV{n}"}
                 for n in (1, 2, 3)],
                 "initial_option": {"text": {"type": "plain_text", "text": "SEV3"},
                                    "value": "SEV3"}}},
        ],
    }
    view.update(overrides)
    return view


# -- Web API: auth, channels, messages ---------------------------------------------------------


def test_auth_and_unknown_method(slack: FakeSlack, client: WebClient) -> None:
    me = client.auth_test()
    assert (me["user_id"], me["bot_id"], me["team_id"]) == ("UBOT", "B0TEST", "T0TEST")
    wrong = WebClient(token="xoxb-wrong", base_url=slack.api_url)
    assert error_of(wrong.auth_test) == "invalid_auth"
    assert error_of(WebClient(base_url=slack.api_url).auth_test) == "not_authed"
    assert error_of(client.api_call, "nope.method") == "unknown_method"
    assert [name for name, _ in slack.calls] == ["auth.test"] * 3 + ["nope.method"]


def test_create_channel_and_name_taken(slack: FakeSlack, client: WebClient) -> None:
    created = client.conversations_create(name="inc-1-db")["channel"]
    assert created["id"].startswith("C") and created["name"] == "inc-1-db"
    assert created["is_member"] and not created["is_private"]
    assert slack.channel(created["id"])["members"] == {"UBOT"}
    assert error_of(client.conversations_create, name="inc-1-db") == "name_taken"
    slack.add_channel("old-incident", members=[ALICE], is_archived=True)
    assert error_of(client.conversations_create, name="old-incident") == "name_taken"
    private = client.conversations_create(name="secret", is_private=True)["channel"]
    assert private["is_private"] and slack.channel_by_name("secret") == slack.channel(
        private["id"])
    assert slack.channel_by_name("nope") is None


@pytest.mark.parametrize(("name", "error"), [
    ("", "invalid_name_required"),
    ("a" * 81, "invalid_name_maxlength"),
    ("--_", "invalid_name_punctuation"),
    ("Has-Caps", "invalid_name_specials"),
    ("two words", "invalid_name_specials"),
    ("dots.here", "invalid_name_specials"),
])
def test_invalid_channel_names(client: WebClient, name: str, error: str) -> None:
    assert error_of(client.conversations_create, name=name) == error


def test_invite_rules(slack: FakeSlack, client: WebClient) -> None:
    channel = client.conversations_create(name="inc-2")["channel"]["id"]
    client.conversations_invite(channel=channel, users=ALICE)
    assert ALICE in slack.channel(channel)["members"]
    assert error_of(client.conversations_invite, channel=channel, users=ALICE) == \
        "already_in_channel"
    client.conversations_invite(channel=channel, users=f"{ALICE},{BOB}")  # BOB is new: ok
    assert {ALICE, BOB} <= slack.channel(channel)["members"]
    assert error_of(client.conversations_invite, channel=channel, users="UNOBODY") == \
        "user_not_found"
    assert error_of(client.conversations_invite, channel=channel, users="UBOT") == \
        "cant_invite_self"
    outside = slack.add_channel("no-bot-here", members=[ALICE])
    assert error_of(client.conversations_invite, channel=outside, users=BOB) == "not_in_channel"
    hidden = slack.add_channel("private-no-bot", members=[ALICE], is_private=True)
    assert error_of(client.conversations_invite, channel=hidden, users=BOB) == \
        "channel_not_found"
    client.conversations_archive(channel=channel)
    assert error_of(client.conversations_archive, channel=channel) == "already_archived"
    assert error_of(client.conversations_invite, channel=channel, users=BOB) == "is_archived"


def test_topic_join_info_members(slack: FakeSlack, client: WebClient) -> None:
    channel = client.conversations_create(name="inc-3")["channel"]["id"]
    client.conversations_setTopic(channel=channel, topic="SEV1 · Investigating")
    assert slack.channel(channel)["topic"] == "SEV1 · Investigating"
    info = client.conversations_info(channel=channel)["channel"]
    assert info["topic"]["value"] == "SEV1 · Investigating"
    assert error_of(client.conversations_setTopic, channel=channel, topic="x" * 251) == "too_long"
    public = slack.add_channel("random", members=[ALICE])
    client.conversations_join(channel=public)
    assert client.conversations_members(channel=public)["members"] == sorted([ALICE, "UBOT"])
    private = slack.add_channel("locked", members=["UBOT"], is_private=True)
    assert error_of(client.conversations_join, channel=private) == \
        "method_not_supported_for_channel_type"
    with pytest.raises(NotFound):
        slack.channel("CMISSING")


def test_post_update_pin(slack: FakeSlack, client: WebClient) -> None:
    channel = client.conversations_create(name="inc-4")["channel"]["id"]
    card_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*SEV3*"}}]
    posted = client.chat_postMessage(channel=channel, text="card", blocks=card_blocks)
    ts = posted["ts"]
    assert posted["message"]["blocks"] == card_blocks and posted["message"]["bot_id"] == "B0TEST"
    reply = client.chat_postMessage(channel=channel, text="in thread", thread_ts=ts)
    assert float(reply["ts"]) > float(ts)
    # Form-encoded blocks (a JSON string) are accepted too, and logged decoded.
    client.api_call("chat.postMessage", params={"channel": channel, "text": "form",
                                                "blocks": json.dumps(card_blocks)})
    assert slack.calls_to("chat.postMessage")[-1]["blocks"] == card_blocks
    assert slack.messages(channel)[-1]["blocks"] == card_blocks

    for severity in ("SEV2", "SEV1"):
        client.chat_update(channel=channel, ts=ts, text=f"card {severity}")
    card = slack.message(channel, ts)
    assert card["text"] == "card SEV1" and card["blocks"] == card_blocks  # blocks kept
    assert len(slack.updates(channel, ts)) == 2 and card["edited"]["user"] == "UBOT"
    assert error_of(client.chat_update, channel=channel, ts="1.000001", text="x") == \
        "message_not_found"
    theirs = slack.add_message(channel, ALICE, "hello")
    assert error_of(client.chat_update, channel=channel, ts=theirs, text="x") == \
        "cant_update_message"

    client.pins_add(channel=channel, timestamp=ts)
    assert [m["ts"] for m in slack.pins(channel)] == [ts]
    assert error_of(client.pins_add, channel=channel, timestamp=ts) == "already_pinned"
    assert error_of(client.pins_add, channel=channel, timestamp="1.000001") == "message_not_found"
    assert client.pins_list(channel=channel)["items"][0]["message"]["ts"] == ts
    link = client.chat_getPermalink(channel=channel, message_ts=ts)["permalink"]
    assert link.endswith(f"/archives/{channel}/p{ts.replace('.', '')}")
    history = client.conversations_history(channel=channel)["messages"]
    assert history[-1]["ts"] == ts and history[-1]["reply_count"] == 1
    bookmark = client.bookmarks_add(channel_id=channel, title="Doc", type="link",
                                    link="https://example.com/doc")["bookmark"]
    assert slack.bookmarks(channel) == [bookmark]


def test_post_message_errors(slack: FakeSlack, client: WebClient) -> None:
    channel = client.conversations_create(name="inc-5")["channel"]["id"]
    with pytest.warns(UserWarning, match="text"):  # slack_sdk warns too
        assert error_of(client.chat_postMessage, channel=channel) == "no_text"
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    with pytest.raises(SlackApiError) as failure:
        client.chat_postMessage(channel=channel, text="t", blocks=too_long)
    assert failure.value.response["error"] == "invalid_blocks"
    assert "/blocks/0/text/text" in failure.value.response["errors"][0]
    many = [{"type": "divider"}] * 51
    assert error_of(client.chat_postMessage, channel=channel, text="t", blocks=many) == \
        "invalid_blocks"
    assert error_of(client.api_call, "chat.postMessage",
                    params={"channel": channel, "blocks": "[{not json"}) == "invalid_blocks"
    assert error_of(client.chat_postMessage, channel=channel, text="x" * 40_001) == \
        "msg_too_long"
    assert error_of(client.chat_postMessage, channel="CNOPE", text="t") == "channel_not_found"
    outside = slack.add_channel("outside", members=[ALICE])
    assert error_of(client.chat_postMessage, channel=outside, text="t") == "not_in_channel"
    dm = client.chat_postMessage(channel=ALICE, text="psst")
    assert dm["channel"].startswith("D") and slack.messages(dm["channel"])[0]["text"] == "psst"
    assert error_of(client.chat_postEphemeral, channel=channel, user=ALICE, text="t") == \
        "user_not_in_channel"
    client.conversations_invite(channel=channel, users=ALICE)
    client.chat_postEphemeral(channel=channel, user=ALICE, text="only you")
    assert [e["text"] for e in slack.ephemerals(ALICE)] == ["only you"]
    assert slack.ephemerals(BOB) == []
    client.conversations_archive(channel=channel)
    assert error_of(client.chat_postMessage, channel=channel, text="t") == "is_archived"


# -- message metadata and history ----------------------------------------------------------------

REMINDER = {"event_type": "incident_reminder",
            "event_payload": {"claim_key": "reminder:2026-01-01T00:00:00+00:00", "incident_id": 7}}


def test_post_message_keeps_metadata_that_history_returns_only_when_asked(
        slack: FakeSlack, client: WebClient) -> None:
    channel = client.conversations_create(name="inc-meta")["channel"]["id"]
    posted = client.chat_postMessage(channel=channel, text="reminder", metadata=REMINDER)
    as_model = client.chat_postMessage(channel=channel, text="again", metadata=Metadata(
        event_type="incident_reminder", event_payload={"claim_key": "k2", "incident_id": 7}))
    assert "warning" not in posted.data
    assert slack.message(channel, posted["ts"])["metadata"] == REMINDER
    assert slack.calls_to("chat.postMessage")[0]["metadata"] == REMINDER
    plain = client.conversations_history(channel=channel)["messages"]
    assert [m["ts"] for m in plain] == [as_model["ts"], posted["ts"]]  # newest first
    assert all("metadata" not in m for m in plain)
    full = client.conversations_history(channel=channel, include_all_metadata=True)["messages"]
    assert [m["metadata"] for m in full] == [
        {"event_type": "incident_reminder",
         "event_payload": {"claim_key": "k2", "incident_id": 7}}, REMINDER]
    thread = client.conversations_replies(channel=channel, ts=posted["ts"],
                                          include_all_metadata=True)["messages"]
    assert thread[0]["metadata"] == REMINDER
    assert "metadata" not in client.conversations_replies(
        channel=channel, ts=posted["ts"])["messages"][0]


@pytest.mark.parametrize("metadata", [
    "{not json", "[]", json.dumps({"event_payload": {}}),
    json.dumps({"event_type": 7, "event_payload": {}}),
    json.dumps({"event_type": "incident_reminder"}),
    json.dumps({"event_type": "incident_reminder", "event_payload": "claim"}),
])
def test_metadata_of_the_wrong_shape_is_refused(
        slack: FakeSlack, client: WebClient, metadata: str) -> None:
    channel = client.conversations_create(name="inc-bad-meta")["channel"]["id"]
    assert error_of(client.api_call, "chat.postMessage", params={
        "channel": channel, "text": "t", "metadata": metadata}) == "invalid_metadata_format"
    assert slack.messages(channel) == []


def test_an_invalid_event_type_posts_the_message_without_its_metadata(
        slack: FakeSlack, client: WebClient) -> None:
    """Slack: "Metadata with an invalid event_type returns an invalid_metadata_schema warning
    and is ignored"."""
    channel = client.conversations_create(name="inc-schema")["channel"]["id"]
    posted = client.chat_postMessage(channel=channel, text="t", metadata={
        "event_type": "incident.reminder", "event_payload": {"claim_key": "k"}})
    assert posted["warning"] == "invalid_metadata_schema"
    assert posted["response_metadata"]["warnings"] == ["invalid_metadata_schema"]
    assert slack.message(channel, posted["ts"])["metadata"] is None


def test_history_honours_oldest_latest_limit_and_cursor(
        slack: FakeSlack, client: WebClient) -> None:
    channel = client.conversations_create(name="inc-history")["channel"]["id"]
    ts = [client.chat_postMessage(channel=channel, text=f"m{i}")["ts"] for i in range(6)]
    slack.add_message(channel, ALICE, "old, posted late", ts="1000000000.000100")
    assert all(float(t) == pytest.approx(time.time(), abs=60) for t in ts)  # Slack's clock

    def page(**args: Any) -> tuple[list[str], str]:
        data = client.conversations_history(channel=channel, **args)
        assert data["has_more"] == bool(data["response_metadata"]["next_cursor"])
        return [m["text"] for m in data["messages"]], data["response_metadata"]["next_cursor"]

    assert page(oldest=ts[1], latest=ts[4]) == (["m3", "m2"], "")
    assert page(oldest=ts[1], latest=ts[4], inclusive=True) == (["m4", "m3", "m2", "m1"], "")
    first, cursor = page(oldest=ts[0], limit=2)
    assert first == ["m5", "m4"] and cursor
    second, cursor = page(oldest=ts[0], limit=2, cursor=cursor)
    assert second == ["m3", "m2"]
    assert page(oldest=ts[0], limit=2, cursor=cursor) == (["m1"], "")
    assert page(latest=ts[0])[0] == ["old, posted late"]  # ordered by ts, not by arrival
    assert error_of(client.conversations_history, channel=channel, cursor="bm9wZQ==") == \
        "invalid_cursor"


def test_a_hook_runs_after_the_work_and_can_drop_the_answer(
        slack: FakeSlack, client: WebClient) -> None:
    """The caller never learns that its message was stored (it died mid-call, say)."""
    channel = client.conversations_create(name="inc-hook")["channel"]["id"]
    seen: list[tuple[str, int]] = []

    def drop_reminders(args: dict[str, Any], answer: dict[str, Any]) -> bool:
        seen.append((str(answer.get("ts")), len(slack.messages(channel))))  # already stored
        return (args.get("metadata") or {}).get("event_type") == "incident_reminder"

    slack.before_answer("chat.postMessage", drop_reminders)
    assert client.chat_postMessage(channel=channel, text="plain")["ok"]
    with pytest.raises(OSError):
        client.chat_postMessage(channel=channel, text="reminder", metadata=REMINDER)
    stored = slack.messages(channel)
    assert [m["text"] for m in stored] == ["plain", "reminder"]
    assert seen == [(stored[0]["ts"], 1), (stored[1]["ts"], 2)]
    slack.reset()
    channel = client.conversations_create(name="inc-hook")["channel"]["id"]
    assert client.chat_postMessage(channel=channel, text="r", metadata=REMINDER)["ok"]


def test_views_open_trigger_lifecycle(slack: FakeSlack, client: WebClient) -> None:
    trigger = slack.mint_trigger_id(ALICE)
    view = client.views_open(trigger_id=trigger, view=modal())["view"]
    assert view["id"].startswith("V") and view["state"] == {"values": {}} and view["hash"]
    assert slack.last_view() == view and slack.view(view["id"])["callback_id"] == "declare"
    assert error_of(client.views_open, trigger_id=trigger, view=modal()) == "exchanged_trigger_id"
    stale = slack.mint_trigger_id(ALICE)
    slack.advance_clock(3.1)
    assert error_of(client.views_open, trigger_id=stale, view=modal()) == "expired_trigger_id"
    assert error_of(client.views_open, trigger_id="123.456.abc", view=modal()) == \
        "invalid_trigger_id"
    long_title = modal(title={"type": "plain_text", "text": "x" * 25})
    with pytest.raises(SlackApiError) as failure:
        client.views_open(trigger_id=slack.mint_trigger_id(), view=long_title)
    assert failure.value.response["error"] == "invalid_arguments"
    assert "/view/title/text" in failure.value.response["response_metadata"]["messages"][0]
    assert error_of(client.views_open, trigger_id=slack.mint_trigger_id(),
                    view=modal(submit=None)) == "invalid_arguments"
    assert error_of(client.views_open, trigger_id=slack.mint_trigger_id(),
                    view=modal(private_metadata="m" * 3001)) == "invalid_arguments"
    assert error_of(client.views_update, view_id=view["id"], hash="stale.hash",
                    view=modal()) == "hash_conflict"
    updated = client.views_update(view_id=view["id"], hash=view["hash"],
                                  view=modal(callback_id="declare2"))["view"]
    assert updated["id"] == view["id"] and updated["hash"] != view["hash"]
    assert error_of(client.views_update, view_id="VNOPE", view=modal()) == "not_found"


# -- fault injection ---------------------------------------------------------------------------


def test_rate_limit_honours_retry_after(slack: FakeSlack, client: WebClient) -> None:
    channel = client.conversations_create(name="inc-6")["channel"]["id"]
    slack.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1)
    with pytest.raises(SlackApiError) as failure:
        client.chat_postMessage(channel=channel, text="t")
    response = failure.value.response
    assert response.status_code == 429 and response["error"] == "ratelimited"
    assert response.headers["Retry-After"] == "1"

    slack.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1)
    retrying = WebClient(token=TOKEN, base_url=slack.api_url,
                         retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    started = time.monotonic()
    retrying.chat_postMessage(channel=channel, text="after the wait")
    assert time.monotonic() - started >= 1.0  # slept for Retry-After before retrying
    assert len(slack.calls_to("chat.postMessage")) == 3
    assert [m["text"] for m in slack.messages(channel)] == ["after the wait"]


def test_server_error_and_retry(slack: FakeSlack, client: WebClient) -> None:
    slack.fail_next("auth.test", status=500, times=2)
    with pytest.raises(SlackApiError) as failure:
        client.auth_test()
    assert failure.value.response.status_code == 500
    assert failure.value.response["error"] == "internal_error"
    retrying = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[
        ServerErrorRetryHandler(max_retry_count=2, interval_calculator=FAST)])
    assert retrying.auth_test()["ok"]
    assert len(slack.calls_to("auth.test")) == 3


def test_connection_reset_and_retry(slack: FakeSlack, client: WebClient) -> None:
    slack.fail_next("auth.test", reset_connection=True)
    with pytest.raises(OSError):
        client.auth_test()
    slack.fail_next("auth.test", reset_connection=True, times=2)
    retrying = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[
        ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=FAST)])
    assert retrying.auth_test()["ok"]
    assert len(slack.calls_to("auth.test")) == 4


def test_fault_with_custom_error_and_latency(slack: FakeSlack, client: WebClient) -> None:
    slack.fail_next("conversations.create", "restricted_action")
    assert error_of(client.conversations_create, name="inc-7") == "restricted_action"
    assert client.conversations_create(name="inc-7")["ok"]  # consumed: the next call succeeds
    slack.set_latency(0.2, "auth.test")
    started = time.monotonic()
    client.auth_test()
    assert time.monotonic() - started >= 0.2


# -- files and response URLs -------------------------------------------------------------------


def test_files_upload_v2_round_trip(slack: FakeSlack, client: WebClient) -> None:
    channel = client.conversations_create(name="inc-8")["channel"]["id"]
    done = client.files_upload_v2(channel=channel, content=b"postmortem\n", filename="pm.md",
                                  title="Postmortem", initial_comment="Draft attached")
    file_id = done["file"]["id"]
    stored = slack.files[file_id]
    assert stored["content"] == b"postmortem\n" and stored["title"] == "Postmortem"
    assert stored["channels"] == [channel]
    shared = slack.messages(channel)[-1]
    assert shared["text"] == "Draft attached" and shared["files"] == [file_id]
    assert slack.calls_to("upload") == [{"file_id": file_id, "length": 11}]
    assert error_of(client.files_completeUploadExternal, files=[{"id": "FNOPE"}],
                    channel_id=channel) == "file_not_found"


def test_response_urls(slack: FakeSlack) -> None:
    url = slack.new_response_url()
    webhook = WebhookClient(url)
    sent = webhook.send(text="Incident declared", response_type="ephemeral")
    assert (sent.status_code, sent.body) == (200, "ok")
    [posted] = slack.responses
    assert posted["text"] == "Incident declared" and posted["url_id"] == url.rsplit("/", 1)[-1]
    assert slack.responses_to(url) == [posted]
    for _ in range(4):
        assert webhook.send(text="again").status_code == 200
    used = webhook.send(text="sixth")  # Slack allows five uses per response URL
    assert (used.status_code, used.body) == (404, "used_url")
    assert WebhookClient(f"{slack.base_url}/response/nope").send(text="x").status_code == 404
    slack.fail_next("response_url", status=500)
    retrying = WebhookClient(slack.new_response_url(), retry_handlers=[
        ServerErrorRetryHandler(max_retry_count=1, interval_calculator=FAST)])
    assert retrying.send(text="after a 500").status_code == 200


def test_reset_keeps_users(slack: FakeSlack, client: WebClient) -> None:
    client.conversations_create(name="inc-9")
    slack.reset()
    assert slack.channels() == [] and slack.calls == [] and slack.last_view() is None
    assert slack.user(ALICE)["name"] == "alice"


# -- the driver --------------------------------------------------------------------------------


@dataclass
class Captured:
    """Requests received by a stand-in app, and the answer it gives."""

    requests: list[tuple[dict[str, str], str]] = field(default_factory=list)
    status: int = 200
    answer: str = ""


@pytest.fixture
def capture() -> Iterator[tuple[str, Captured]]:
    captured = Captured()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            captured.requests.append((dict(self.headers.items()), body))
            data = captured.answer.encode()
            self.send_response(captured.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slack/events", captured
    server.shutdown()
    server.server_close()


def payload_of(body: str) -> dict[str, Any]:
    return dict(json.loads(parse_qs(body)["payload"][0]))


def test_driver_signature_validates(slack: FakeSlack,
                                    capture: tuple[str, Captured]) -> None:
    url, captured = capture
    driver = SlackDriver(url, SECRET, slack)
    verifier = SignatureVerifier(SECRET)
    response = driver.command("declare Outage", user_id=ALICE, channel_id="CGENERAL")
    assert response.status == 200 and driver.latencies == [response.latency_s]
    headers, body = captured.requests[-1]
    assert verifier.is_valid(body, headers["X-Slack-Request-Timestamp"],
                             headers["X-Slack-Signature"])
    form = {k: v[0] for k, v in parse_qs(body).items()}
    assert form["command"] == "/incident" and form["text"] == "declare Outage"
    assert form["user_name"] == "alice" and form["response_url"] == driver.last_response_url
    assert form["trigger_id"] == driver.last_trigger_id

    driver.command("help", user_id=ALICE, channel_id="C1", timestamp=int(time.time()) - 600)
    headers, body = captured.requests[-1]
    assert not verifier.is_valid(body, headers["X-Slack-Request-Timestamp"],
                                 headers["X-Slack-Signature"])  # too old
    driver.command("help", user_id=ALICE, channel_id="C1", signature="v0=forged")
    assert captured.requests[-1][0]["X-Slack-Signature"] == "v0=forged"
    driver.command("help", user_id=ALICE, channel_id="C1", sign=False,
                   headers={"X-Slack-Retry-Num": "1"})
    headers = captured.requests[-1][0]
    assert "X-Slack-Signature" not in headers and headers["X-Slack-Retry-Num"] == "1"

    captured.status, captured.answer = 401, '{"error": "invalid signature"}'
    refused = driver.command("help", user_id=ALICE, channel_id="C1")
    assert refused.status == 401 and refused.json == {"error": "invalid signature"}


def test_driver_payload_shapes(slack: FakeSlack, client: WebClient,
                               capture: tuple[str, Captured]) -> None:
    url, captured = capture
    driver = SlackDriver(url, SECRET, slack)
    channel = client.conversations_create(name="inc-10")["channel"]["id"]
    button = {"type": "button", "action_id": "assign_role", "value": "7",
              "text": {"type": "plain_text", "text": "Assign role"}}
    ts = client.chat_postMessage(channel=channel, text="card", blocks=[
        {"type": "actions", "block_id": "card_actions", "elements": [button]}])["ts"]
    driver.block_action("assign_role", user_id=ALICE, channel_id=channel, message_ts=ts,
                        value="7")
    payload = payload_of(captured.requests[-1][1])
    assert payload["type"] == "block_actions" and payload["channel"]["name"] == "inc-10"
    assert payload["container"] == {"type": "message", "message_ts": ts, "channel_id": channel,
                                    "is_ephemeral": False}
    [action] = payload["actions"]
    assert (action["block_id"], action["text"]["text"], action["value"]) == \
        ("card_actions", "Assign role", "7")
    assert payload["message"]["blocks"][0]["elements"] == [button]

    view = client.views_open(trigger_id=slack.mint_trigger_id(), view=modal(blocks=[
        *modal()["blocks"],
        {"type": "input", "block_id": "who", "label": {"type": "plain_text", "text": "W"},
         "element": {"type": "users_select", "action_id": "who"}},
        {"type": "input", "block_id": "flags", "optional": True,
         "label": {"type": "plain_text", "text": "F"},
         "element": {"type": "checkboxes", "action_id": "private", "options": [
             {"text": {"type": "plain_text", "text": "Private"}, "value": "private"}]}},
    ]))["view"]
    driver.submit_view(view["id"], {"title": "DB down", "who": BOB, "private": ["private"]},
                       user_id=ALICE)
    submission = payload_of(captured.requests[-1][1])
    assert submission["type"] == "view_submission" and submission["response_urls"] == []
    assert submission["view"]["callback_id"] == "declare"
    assert submission["view"]["hash"] == view["hash"]
    values = submission["view"]["state"]["values"]
    assert values["title"]["title"] == {"type": "plain_text_input", "value": "DB down"}
    assert values["sev"]["sev"]["selected_option"]["value"] == "SEV3"  # initial option kept
    assert values["who"]["who"] == {"type": "users_select", "selected_user": BOB}
    assert values["flags"]["private"]["selected_options"][0]["value"] == "private"
    assert not slack.view_is_open(view["id"])  # an empty ack closes the modal

    driver.submit_view(view["id"], {"sev": "SEV1"}, user_id=ALICE)
    values = payload_of(captured.requests[-1][1])["view"]["state"]["values"]
    assert values["title"]["title"]["value"] is None
    assert values["sev"]["sev"]["selected_option"]["text"]["text"] == "SEV1"
    with pytest.raises(ValueError, match="nope"):
        driver.submit_view(view["id"], {"nope": "x"}, user_id=ALICE)

    ts2 = driver.message_event(channel, ALICE, "api is down")["ts"]
    assert slack.message(channel, ts2)["user"] == ALICE
    driver.event(driver.message_changed_event(channel, ts2, "api is up", ALICE))
    envelope = json.loads(captured.requests[-1][1])
    assert envelope["type"] == "event_callback" and envelope["event_id"].startswith("Ev")
    assert envelope["authorizations"][0]["user_id"] == "UBOT"
    event = envelope["event"]
    assert (event["subtype"], event["message"]["text"], event["previous_message"]["text"]) == \
        ("message_changed", "api is up", "api is down")
    assert slack.message(channel, ts2)["text"] == "api is up"
    deleted = driver.message_deleted_event(channel, ts2)
    assert deleted["deleted_ts"] == ts2 and deleted["previous_message"]["text"] == "api is up"
    reaction = driver.reaction_event("reaction_added", BOB, "eyes", channel, ts)
    assert reaction["item"] == {"type": "message", "channel": channel, "ts": ts}
    assert reaction["item_user"] == "UBOT"
    driver.retry_last_event(2)
    headers, body = captured.requests[-1]
    assert json.loads(body) == envelope and headers["X-Slack-Retry-Num"] == "2"


# -- a real Bolt app behind a real HTTP server accepts what the driver sends -------------------


class _QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def bolt_url(slack: FakeSlack) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    app = App(client=WebClient(token=TOKEN, base_url=slack.api_url), signing_secret=SECRET,
              process_before_response=True)

    @app.command("/incident")
    def declare(ack: Any, body: dict[str, Any], client: WebClient, respond: Any) -> None:
        ack()
        client.views_open(trigger_id=body["trigger_id"], view=modal())
        respond("Opening the form")

    @app.view("declare")
    def submitted(ack: Any, view: dict[str, Any], client: WebClient) -> None:
        title = view["state"]["values"]["title"]["title"]["value"]
        if not title:
            ack(response_action="errors", errors={"title": "A title is required"})
            return
        ack()
        channel = client.conversations_create(name="inc-bolt")["channel"]["id"]
        client.chat_postMessage(channel=channel, text=title, blocks=[{"type": "actions",
            "elements": [{"type": "button", "action_id": "resolve", "value": "1",
                          "text": {"type": "plain_text", "text": "Resolve"}}]}])

    @app.action("resolve")
    def resolve(ack: Any, body: dict[str, Any], client: WebClient) -> None:
        ack()
        client.chat_update(channel=body["channel"]["id"], ts=body["message"]["ts"],
                           text="Resolved")

    @app.event("message")
    def on_message(event: dict[str, Any]) -> None:
        seen.append(event)

    server: WSGIServer = make_server("127.0.0.1", 0, SlackRequestHandler(app),
                                     handler_class=_QuietWSGIHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/slack/events", seen
    server.shutdown()
    server.server_close()


def test_bolt_app_accepts_driver_requests(slack: FakeSlack,
                                          bolt_url: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = bolt_url
    driver = SlackDriver(url, SECRET, slack)
    assert driver.command("declare", user_id=ALICE, channel_id="CGENERAL").status == 200
    assert slack.responses_to(driver.last_response_url or "")[0]["text"] == "Opening the form"
    view = slack.last_view()
    assert view is not None and view["callback_id"] == "declare"

    refused = driver.submit_view(view["id"], {"title": ""}, user_id=ALICE)
    assert refused.json == {"response_action": "errors",
                            "errors": {"title": "A title is required"}}
    assert slack.view_is_open(view["id"])
    assert driver.submit_view(view["id"], {"title": "Checkout down"}, user_id=ALICE).status == 200
    channel = slack.channel_by_name("inc-bolt")
    assert channel is not None
    [card] = slack.messages(channel["id"])
    assert card["text"] == "Checkout down"

    driver.block_action("resolve", user_id=ALICE, channel_id=channel["id"],
                        message_ts=card["ts"], value="1")
    assert slack.message(channel["id"], card["ts"])["text"] == "Resolved"

    driver.event(driver.message_event(channel["id"], ALICE, "on it"))
    assert [e["text"] for e in seen] == ["on it"]
    assert driver.command("help", user_id=ALICE, channel_id="C1",
                          signature="v0=forged").status == 401
    assert driver.command("help", user_id=ALICE, channel_id="C1", sign=False).status == 401
