"""Plays Slack's side of the conversation: signed requests shaped like Slack's real payloads.

`SlackDriver` posts slash commands, block actions, view submissions and Events API callbacks to
the app's request URL, signed with the signing secret as Slack signs them. Trigger IDs and
response URLs are minted by the `FakeSlack` the app talks to, so the app can use them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from tests.fakeslack import JSON, FakeSlack, NotFound

VERIFICATION_TOKEN = "verification-token"  # the deprecated token Slack still sends
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"

# view.state value keys by element type (input elements and stateful block elements).
_SINGLE_VALUE = {
    "plain_text_input": ("value", "initial_value"),
    "email_text_input": ("value", "initial_value"),
    "url_text_input": ("value", "initial_value"),
    "number_input": ("value", "initial_value"),
    "users_select": ("selected_user", "initial_user"),
    "conversations_select": ("selected_conversation", "initial_conversation"),
    "channels_select": ("selected_channel", "initial_channel"),
    "datepicker": ("selected_date", "initial_date"),
    "timepicker": ("selected_time", "initial_time"),
    "datetimepicker": ("selected_date_time", "initial_date_time"),
    "rich_text_input": ("rich_text_value", "initial_value"),
}
_MULTI_VALUE = {
    "multi_users_select": ("selected_users", "initial_users"),
    "multi_conversations_select": ("selected_conversations", "initial_conversations"),
    "multi_channels_select": ("selected_channels", "initial_channels"),
}
_ONE_OPTION = frozenset({"static_select", "external_select", "radio_buttons"})
_MANY_OPTIONS = frozenset({"multi_static_select", "multi_external_select", "checkboxes"})
_STATEFUL = frozenset(_SINGLE_VALUE) | frozenset(_MULTI_VALUE) | _ONE_OPTION | _MANY_OPTIONS | {
    "file_input"}


@dataclass(frozen=True)
class DriverResponse:
    """The app's answer to one request; never raised for HTTP 4xx/5xx."""

    status: int
    body: str
    latency_s: float
    headers: dict[str, str] = field(default_factory=dict)
    view_errors: list[str] = field(default_factory=list)

    @property
    def json(self) -> dict[str, Any] | None:
        """The body parsed as a JSON object, or None (empty ack, plain text)."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


def _rich_text(text: str) -> JSON:
    """The rich_text block Slack attaches to messages typed by users."""
    elements = [{"type": "text", "text": text}] if text else []
    return {"type": "rich_text", "block_id": secrets.token_hex(2),
            "elements": [{"type": "rich_text_section", "elements": elements}]}


def _interactive_elements(blocks: list[JSON]) -> list[tuple[str, JSON]]:
    """(block_id, element) for every element with an action_id in a blocks array."""
    found = []
    for block in blocks:
        block_id = str(block.get("block_id", ""))
        candidates = [block.get("element"), block.get("accessory"), *block.get("elements", [])]
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id"):
                found.append((block_id, element))
    return found


def _all_options(element: JSON) -> list[JSON]:
    options = list(element.get("options") or [])
    for group in element.get("option_groups") or []:
        options += group.get("options") or []
    return options


def _option_for(element: JSON, value: Any) -> JSON:
    """The element's option with this value; a made-up one if there is none (forged input)."""
    if isinstance(value, dict):
        return copy.deepcopy(value)
    for option in _all_options(element):
        if option.get("value") == str(value):
            return copy.deepcopy(option)
    return {"text": {"type": "plain_text", "text": str(value), "emoji": True},
            "value": str(value)}


def state_entry(element: JSON, value: Any = None, *, provided: bool = True) -> JSON:
    """One `view.state.values[block_id][action_id]` entry, in Slack's shape for the element.

    Without a provided value the element reports its initial value (or None), as Slack does.
    """
    kind = str(element["type"])
    if kind in _ONE_OPTION:
        option = element.get("initial_option") if not provided else (
            None if value is None else _option_for(element, value))
        return {"type": kind, "selected_option": copy.deepcopy(option)}
    if kind in _MANY_OPTIONS:
        if not provided:
            chosen = copy.deepcopy(element.get("initial_options") or [])
        elif value is True:
            chosen = copy.deepcopy(_all_options(element))
        elif value in (None, False):
            chosen = []
        else:
            values = [value] if isinstance(value, str | dict) else list(value)
            chosen = [_option_for(element, v) for v in values]
        return {"type": kind, "selected_options": chosen}
    if kind in _MULTI_VALUE:
        key, initial = _MULTI_VALUE[kind]
        chosen = list(element.get(initial) or []) if not provided else (
            [] if value is None else [value] if isinstance(value, str) else list(value))
        return {"type": kind, key: chosen}
    if kind == "file_input":
        return {"type": kind, "files": list(value or []) if provided else []}
    key, initial = _SINGLE_VALUE.get(kind, ("value", "initial_value"))
    chosen = value if provided else element.get(initial)
    if kind in ("plain_text_input", "email_text_input", "url_text_input", "number_input"):
        chosen = None if chosen is None else str(chosen)
    return {"type": kind, key: chosen}


class SlackDriver:
    """Sends signed slash commands, interactions and events to the app like Slack does."""

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        fake: FakeSlack,
        team_id: str = "T0TEST",
        api_app_id: str = "A0TEST",
        *,
        team_domain: str = "fakeslack",
        timeout: float = 10.0,
    ) -> None:
        self.app_url = app_url
        self.signing_secret = signing_secret
        self.fake = fake
        self.team_id = team_id
        self.api_app_id = api_app_id
        self.team_domain = team_domain
        self.timeout = timeout
        self.latencies: list[float] = []
        self.last_response_url: str | None = None
        self.last_trigger_id: str | None = None
        self.last_event_id: str | None = None
        self._last_event_body: str | None = None
        # Never route loopback traffic through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- transport -----------------------------------------------------------------------------

    def signature_for(self, body: str, timestamp: str) -> str:
        """`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`, as Slack signs requests."""
        base = f"v0:{timestamp}:{body}".encode()
        return "v0=" + hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()

    def send(
        self,
        body: str,
        *,
        content_type: str = "application/x-www-form-urlencoded",
        timestamp: int | str | None = None,
        signature: str | None = None,
        sign: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> DriverResponse:
        """POST a raw body to the app, signed unless `sign=False` (overrides for security tests)."""
        request_headers = {"Content-Type": content_type, "User-Agent": USER_AGENT,
                           "Accept": "application/json,*/*"}
        if sign:
            ts = str(int(time.time())) if timestamp is None else str(timestamp)
            request_headers["X-Slack-Request-Timestamp"] = ts
            request_headers["X-Slack-Signature"] = (
                signature if signature is not None else self.signature_for(body, ts))
        request_headers.update(headers or {})
        request = urllib.request.Request(self.app_url, data=body.encode(),
                                         headers=request_headers, method="POST")
        started = time.perf_counter()
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
                status = response.status
                answer_headers = dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
                status = exc.code
                answer_headers = dict(exc.headers.items())
        latency = time.perf_counter() - started
        self.latencies.append(latency)
        return DriverResponse(status=status, body=raw.decode("utf-8", "replace"),
                              latency_s=latency, headers=answer_headers)

    def _send_payload(self, payload: JSON, **signing: Any) -> DriverResponse:
        return self.send(urlencode({"payload": json.dumps(payload)}), **signing)

    # -- lookups in the fake -------------------------------------------------------------------

    def _user(self, user_id: str) -> JSON:
        try:
            name = str(self.fake.user(user_id)["name"])
        except NotFound:
            name = user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _channel_name(self, channel_id: str) -> str | None:
        try:
            channel = self.fake.channel(channel_id)
        except NotFound:
            return None
        return "directmessage" if channel["is_im"] else str(channel["name"])

    def _channel_type(self, channel_id: str) -> str:
        try:
            channel = self.fake.channel(channel_id)
        except NotFound:
            return "im" if channel_id.startswith("D") else "channel"
        if channel["is_im"]:
            return "im"
        return "group" if channel["is_private"] else "channel"

    def _team(self) -> JSON:
        return {"id": self.team_id, "domain": self.team_domain}

    # -- slash commands and interactions -------------------------------------------------------

    def command(
        self,
        text: str,
        *,
        user_id: str,
        channel_id: str,
        channel_name: str | None = None,
        command: str = "/incident",
        timestamp: int | str | None = None,
        signature: str | None = None,
        sign: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> DriverResponse:
        """A slash command invocation (form-encoded, like Slack's)."""
        response_url = self.fake.new_response_url(channel_id=channel_id, user_id=user_id)
        trigger_id = self.fake.mint_trigger_id(user_id)
        self.last_response_url, self.last_trigger_id = response_url, trigger_id
        body = urlencode({
            "token": VERIFICATION_TOKEN, "team_id": self.team_id,
            "team_domain": self.team_domain, "channel_id": channel_id,
            "channel_name": channel_name or self._channel_name(channel_id) or "general",
            "user_id": user_id, "user_name": self._user(user_id)["name"], "command": command,
            "text": text, "api_app_id": self.api_app_id, "is_enterprise_install": "false",
            "response_url": response_url, "trigger_id": trigger_id,
        })
        return self.send(body, timestamp=timestamp, signature=signature, sign=sign,
                         headers=headers)

    def block_action(
        self,
        action_id: str,
        *,
        user_id: str,
        channel_id: str,
        message_ts: str,
        value: str = "",
        block_id: str | None = None,
        action_type: str = "button",
        selected_option: JSON | None = None,
        timestamp: int | str | None = None,
        signature: str | None = None,
        sign: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> DriverResponse:
        """A click on an element of a message, with the message as the fake holds it.

        `block_id` defaults to the block holding `action_id` in that message (else "b").
        """
        message = self.fake.api_message(channel_id, message_ts)
        element: JSON = {}
        for found_block_id, candidate in _interactive_elements(
                (message or {}).get("blocks", [])):
            if candidate.get("action_id") == action_id:
                element = candidate
                block_id = block_id or found_block_id
                break
        response_url = self.fake.new_response_url(channel_id=channel_id, user_id=user_id)
        trigger_id = self.fake.mint_trigger_id(user_id)
        self.last_response_url, self.last_trigger_id = response_url, trigger_id
        action: JSON = {"action_id": action_id, "block_id": block_id or "b", "type": action_type}
        if action_type == "button":
            action["text"] = copy.deepcopy(element.get("text")) or {
                "type": "plain_text", "text": action_id, "emoji": True}
            action["value"] = value
            if "style" in element:
                action["style"] = element["style"]
        elif action_type in ("static_select", "external_select", "overflow", "radio_buttons"):
            action["selected_option"] = selected_option or _option_for(element, value)
        elif action_type in _SINGLE_VALUE:
            action[_SINGLE_VALUE[action_type][0]] = value
        else:
            action["value"] = value
        action["action_ts"] = f"{time.time():.6f}"
        payload: JSON = {
            "type": "block_actions", "user": self._user(user_id),
            "api_app_id": self.api_app_id, "token": VERIFICATION_TOKEN,
            "container": {"type": "message", "message_ts": message_ts,
                          "channel_id": channel_id, "is_ephemeral": False},
            "trigger_id": trigger_id, "team": self._team(), "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id,
                        "name": self._channel_name(channel_id) or "general"},
            "message": message or {"type": "message", "ts": message_ts, "text": ""},
            "state": {"values": {}}, "response_url": response_url, "actions": [action],
        }
        return self._send_payload(payload, timestamp=timestamp, signature=signature, sign=sign,
                                  headers=headers)

    def view_state(self, view: JSON, values: Mapping[str, object]) -> JSON:
        """`view.state.values` for `values` ({action_id: value}); others keep initial values."""
        elements = [(b, e) for b, e in _interactive_elements(view.get("blocks", []))
                    if e.get("type") in _STATEFUL]
        by_action: dict[str, list[str]] = {}
        for block_id, element in elements:
            by_action.setdefault(str(element["action_id"]), []).append(block_id)
        for action_id in values:
            if action_id not in by_action:
                raise ValueError(f"no input with action_id {action_id!r} in view {view.get('id')}"
                                 f" (has {sorted(by_action)})")
            if len(by_action[action_id]) > 1:
                raise ValueError(f"action_id {action_id!r} is in several blocks of the view")
        state: JSON = {}
        for block_id, element in elements:
            action_id = str(element["action_id"])
            provided = action_id in values
            state.setdefault(block_id, {})[action_id] = state_entry(
                element, values.get(action_id), provided=provided)
        return state

    def submit_view(
        self,
        view_id: str,
        values: Mapping[str, object],
        *,
        user_id: str,
        timestamp: int | str | None = None,
        signature: str | None = None,
        sign: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> DriverResponse:
        """Submit a modal the fake holds, with `values` keyed by the inputs' action_ids.

        Values: str for text/number inputs and users/conversations/channels selects, an option
        value (or option dict) for selects and radio buttons, a list of option values (or True
        for all) for checkboxes and multi-selects. The ack's `response_action` (update, push,
        clear, or closing the view) is applied to the fake as Slack would.
        """
        stored = self.fake.view(view_id)
        view = {key: copy.deepcopy(stored.get(key)) for key in (
            "id", "team_id", "type", "blocks", "private_metadata", "callback_id", "state",
            "hash", "title", "clear_on_close", "notify_on_close", "close", "submit",
            "previous_view_id", "root_view_id", "app_id", "external_id",
            "app_installed_team_id", "bot_id")}
        view["state"] = {"values": self.view_state(stored, values)}
        response_urls = []
        for block_id, element in _interactive_elements(stored.get("blocks", [])):
            if element.get("response_url_enabled"):
                entry = view["state"]["values"][block_id][element["action_id"]]
                chosen = entry.get("selected_conversation") or entry.get("selected_channel")
                if chosen:
                    response_urls.append({
                        "block_id": block_id, "action_id": element["action_id"],
                        "channel_id": chosen,
                        "response_url": self.fake.new_response_url(channel_id=chosen,
                                                                   user_id=user_id)})
        trigger_id = self.fake.mint_trigger_id(user_id)
        self.last_trigger_id = trigger_id
        payload: JSON = {
            "type": "view_submission", "team": self._team(), "user": self._user(user_id),
            "api_app_id": self.api_app_id, "token": VERIFICATION_TOKEN,
            "trigger_id": trigger_id, "view": view, "response_urls": response_urls,
            "is_enterprise_install": False, "enterprise": None,
        }
        response = self._send_payload(payload, timestamp=timestamp, signature=signature,
                                      sign=sign, headers=headers)
        if response.status == 200:
            problems = self.fake.apply_view_ack(view_id, response.json)
            if problems:
                response = DriverResponse(response.status, response.body, response.latency_s,
                                          response.headers, problems)
        return response

    def close_view(
        self, view_id: str, *, user_id: str, headers: Mapping[str, str] | None = None,
    ) -> DriverResponse:
        """The user dismissed a modal: a `view_closed` payload (sent only if notify_on_close)."""
        stored = self.fake.view(view_id)
        self.fake.close_view(view_id)
        payload: JSON = {
            "type": "view_closed", "team": self._team(), "user": self._user(user_id),
            "api_app_id": self.api_app_id, "token": VERIFICATION_TOKEN, "view": stored,
            "is_cleared": False, "is_enterprise_install": False, "enterprise": None,
        }
        return self._send_payload(payload, headers=headers)

    # -- Events API ----------------------------------------------------------------------------

    def event(
        self,
        event: JSON,
        *,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timestamp: int | str | None = None,
        signature: str | None = None,
        sign: bool = True,
    ) -> DriverResponse:
        """An Events API `event_callback` envelope around `event` (JSON body)."""
        event_id = event_id or f"Ev{secrets.token_hex(5).upper()}"
        context = event.get("channel") or event.get("item", {}).get("channel") or self.team_id
        envelope: JSON = {
            "token": VERIFICATION_TOKEN, "team_id": self.team_id,
            "context_team_id": self.team_id, "context_enterprise_id": None,
            "api_app_id": self.api_app_id, "event": event, "type": "event_callback",
            "event_id": event_id, "event_time": int(time.time()),
            "authorizations": [{
                "enterprise_id": None, "team_id": self.team_id,
                "user_id": self.fake.bot_user_id, "is_bot": True,
                "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
            "event_context": f"4-{event.get('type', 'event')}-{self.team_id}-{context}",
        }
        body = json.dumps(envelope)
        self.last_event_id, self._last_event_body = event_id, body
        return self.send(body, content_type="application/json", timestamp=timestamp,
                         signature=signature, sign=sign, headers=headers)

    def retry_last_event(self, retry_num: int = 1,
                         reason: str = "http_timeout") -> DriverResponse:
        """Redeliver the last event byte for byte, with Slack's retry headers."""
        if self._last_event_body is None:
            raise ValueError("no event was sent yet")
        return self.send(self._last_event_body, content_type="application/json", headers={
            "X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": reason})

    def message_event(
        self, channel: str, user: str, text: str, ts: str | None = None,
        thread_ts: str | None = None,
    ) -> JSON:
        """A `message` event; the message is also stored in the fake (as Slack would hold it)."""
        ts = ts or self.fake.new_ts()
        event: JSON = {
            "type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
            "event_ts": ts, "channel_type": self._channel_type(channel), "team": self.team_id,
            "client_msg_id": str(uuid.uuid4()), "blocks": [_rich_text(text)],
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
            parent = self.fake.api_message(channel, thread_ts)
            if parent is not None:
                event["parent_user_id"] = parent["user"]
        with contextlib.suppress(NotFound):  # unless the fake does not model the channel
            self.fake.add_message(channel, user, text, ts=ts, thread_ts=thread_ts,
                                  blocks=event["blocks"])
        return event

    def message_changed_event(self, channel: str, ts: str, new_text: str, user: str) -> JSON:
        """A `message_changed` event (the fake's copy of the message is edited too)."""
        previous = self.fake.api_message(channel, ts) or {
            "type": "message", "user": user, "text": "", "ts": ts, "team": self.team_id}
        event_ts = self.fake.new_ts()
        message = {
            "type": "message", "user": user, "text": new_text, "ts": ts, "team": self.team_id,
            "edited": {"user": user, "ts": event_ts}, "blocks": [_rich_text(new_text)],
        }
        if previous.get("thread_ts"):
            message["thread_ts"] = previous["thread_ts"]
        with contextlib.suppress(NotFound):
            self.fake.edit_message(channel, ts, new_text, blocks=message["blocks"], user=user)
        return {
            "type": "message", "subtype": "message_changed", "message": message,
            "previous_message": previous, "channel": channel, "hidden": True, "ts": event_ts,
            "event_ts": event_ts, "channel_type": self._channel_type(channel),
        }

    def message_deleted_event(self, channel: str, ts: str) -> JSON:
        """A `message_deleted` event (the message is removed from the fake too)."""
        previous = self.fake.api_message(channel, ts) or {
            "type": "message", "text": "", "ts": ts, "team": self.team_id}
        event_ts = self.fake.new_ts()
        with contextlib.suppress(NotFound):
            self.fake.remove_message(channel, ts)
        return {
            "type": "message", "subtype": "message_deleted", "previous_message": previous,
            "channel": channel, "hidden": True, "deleted_ts": ts, "event_ts": event_ts,
            "ts": event_ts, "channel_type": self._channel_type(channel),
        }

    def reaction_event(
        self, kind: Literal["reaction_added", "reaction_removed"], user: str, reaction: str,
        channel: str, ts: str,
    ) -> JSON:
        """A `reaction_added` / `reaction_removed` event on a message."""
        event: JSON = {
            "type": kind, "user": user, "reaction": reaction,
            "item": {"type": "message", "channel": channel, "ts": ts},
            "event_ts": self.fake.new_ts(),
        }
        target = self.fake.api_message(channel, ts)
        if target is not None:
            event["item_user"] = target["user"]
        return event

