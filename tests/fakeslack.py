"""A faithful fake of the Slack Web API, served on loopback for the real slack_sdk clients.

`FakeSlack` answers `/api/<method>` like slack.com does (HTTP 200 with `{"ok": ...}` bodies, Slack's
error codes and argument checks), plus the file upload URLs handed out by
`files.getUploadURLExternal` and slash-command response URLs (like hooks.slack.com). Faults
(429 + Retry-After, 5xx, connection resets) and latency can be injected per method, and a
hook can run between a method's work and its answer (`before_answer`).

All state is guarded by one lock; the read helpers return deep copies.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import email.parser
import email.policy
import itertools
import json
import mimetypes
import re
import secrets
import socket
import string
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000
MAX_SECTION_TEXT = 3000
MAX_TOPIC = 250
MAX_CHANNEL_NAME = 80
MAX_VIEW_TITLE = 24
MAX_CALLBACK_ID = 255
MAX_PRIVATE_METADATA = 3000
TRIGGER_TTL_S = 3.0
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_TTL_S = 30 * 60

# Arguments that arrive JSON-encoded in form bodies; decoded for the call log.
_JSON_ARGS = ("blocks", "attachments", "view", "files", "metadata")
# Methods slack.com answers without a token.
_NO_AUTH = frozenset({"api.test"})
# Methods that take the app-level token (xapp-…) instead of the bot token.
_APP_TOKEN = frozenset({"apps.connections.open"})
_BLOCK_TYPES = frozenset({
    "actions", "context", "divider", "file", "header", "image", "input", "markdown",
    "rich_text", "section", "table", "video",
})
_ID_CHARS = string.ascii_letters + string.digits
# A message metadata `event_type`: letters, digits, `_` and `-` ("Using message metadata").
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_-]+")

# `hook(args, answer)`, run before a Web API answer leaves (see `FakeSlack.before_answer`)
AnswerHook = Callable[[JSON, JSON], bool | None]


class SlackError(Exception):
    """Raised by a method handler; answered as `{"ok": false, "error": error, **extra}`."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class NotFound(KeyError, AssertionError):
    """A read helper was asked for something the fake does not hold.

    It is an AssertionError too, so polling helpers such as `eventually()` keep waiting.
    """


@dataclass(frozen=True)
class _Fault:
    error: str | None
    status: int
    retry_after: int | None
    reset_connection: bool


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeSlack

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up mid-request (the bot gave up on a call) is not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An answer leaves as two writes (headers, then body). With Nagle's algorithm on, the
    # body of every answer after the first on a kept-alive connection waits for the client's
    # delayed ACK of the headers: 40 ms per call on loopback. Slack's servers do not do that.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._connected(self.connection)

    def finish(self) -> None:
        self.server.fake._disconnected(self.connection)
        super().finish()

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the call log instead."""


# ---------------------------------------------------------------------------------------------
# Argument helpers and Block Kit validation
# ---------------------------------------------------------------------------------------------


def _s(args: JSON, key: str) -> str:
    value = args.get(key)
    return "" if value is None else str(value)


def _flag(args: JSON, key: str) -> bool:
    value = args.get(key)
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes"}


def _json_arg(value: Any) -> Any:
    """A JSON-encoded form value decoded; values from JSON bodies pass through."""
    return json.loads(value) if isinstance(value, str) else value


def _message_metadata(raw: Any) -> tuple[JSON | None, str | None]:
    """chat.postMessage's `metadata`, checked as Slack does: (metadata, warning).

    Not an object with a string `event_type` and an object `event_payload`: refused with
    `invalid_metadata_format`. An `event_type` with other characters than letters, digits,
    `_` and `-`: the message is posted without its metadata, with the warning
    `invalid_metadata_schema` ("Metadata with an invalid event_type returns an
    invalid_metadata_schema warning and is ignored", Slack's "Using message metadata").
    """
    if raw in (None, ""):
        return None, None
    try:
        metadata = _json_arg(raw)
    except ValueError:
        raise SlackError("invalid_metadata_format") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str) \
            or not isinstance(metadata.get("event_payload"), dict):
        raise SlackError("invalid_metadata_format")
    if not _EVENT_TYPE.fullmatch(metadata["event_type"]):
        return None, "invalid_metadata_schema"
    return {"event_type": metadata["event_type"],
            "event_payload": copy.deepcopy(metadata["event_payload"])}, None


def _history_cursor(ts: str) -> str:
    """conversations.history's next_cursor: Slack's own shape, base64 of `next_ts:<ts digits>`."""
    return base64.b64encode(f"next_ts:{ts.replace('.', '')}".encode()).decode()


def _cursor_ts(cursor: str) -> str:
    """The ts a history cursor continues before; `invalid_cursor` if it is not one of ours."""
    try:
        prefix, digits = base64.b64decode(cursor, validate=True).decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        raise SlackError("invalid_cursor") from None
    if prefix != "next_ts" or not digits.isdigit() or len(digits) <= 6:
        raise SlackError("invalid_cursor")
    return f"{digits[:-6]}.{digits[-6:]}"


def _short_id(taken: Iterable[str] = ()) -> str:
    used = set(taken)
    while True:
        candidate = "".join(secrets.choice(_ID_CHARS) for _ in range(5))
        if candidate not in used:
            return candidate


def _err(message: str, pointer: str) -> str:
    return f"[ERROR] {message} [json-pointer:{pointer}]"


def _text_errors(
    obj: Any, pointer: str, max_len: int, *, plain_only: bool = False, required: bool = True
) -> list[str]:
    if obj is None:
        return [_err("missing required field", pointer)] if required else []
    if not isinstance(obj, dict):
        return [_err("must be an object", pointer)]
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in kinds:
        return [_err(f"must be one of: {', '.join(kinds)}", f"{pointer}/type")]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [_err("must be more than 0 characters", f"{pointer}/text")]
    if len(text) > max_len:
        return [_err(f"must be less than {max_len + 1} characters", f"{pointer}/text")]
    return []


def _str_errors(value: Any, pointer: str, max_len: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        return [_err("must be a string", pointer)]
    if len(value) > max_len:
        return [_err(f"must be less than {max_len + 1} characters", pointer)]
    return []


def _option_errors(options: Any, pointer: str, max_items: int) -> list[str]:
    if not isinstance(options, list) or not options:
        return [_err("must provide at least one option", pointer)]
    errors = []
    if len(options) > max_items:
        errors.append(_err(f"must provide no more than {max_items} items", pointer))
    for i, option in enumerate(options):
        p = f"{pointer}/{i}"
        if not isinstance(option, dict):
            errors.append(_err("must be an object", p))
            continue
        errors += _text_errors(option.get("text"), f"{p}/text", 75)
        value = option.get("value")
        if not isinstance(value, str) or not value:
            errors.append(_err("missing required field", f"{p}/value"))
        else:
            errors += _str_errors(value, f"{p}/value", 150)
    return errors


def _element_errors(element: Any, pointer: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [_err("missing required field: type", pointer)]
    kind = element["type"]
    errors = _str_errors(element.get("action_id"), f"{pointer}/action_id", 255)
    if "placeholder" in element:
        errors += _text_errors(element["placeholder"], f"{pointer}/placeholder", 150,
                               plain_only=True)
    if kind == "button":
        errors += _text_errors(element.get("text"), f"{pointer}/text", 75, plain_only=True)
        errors += _str_errors(element.get("value"), f"{pointer}/value", 2000)
        errors += _str_errors(element.get("url"), f"{pointer}/url", 3000)
    elif kind in ("static_select", "multi_static_select", "overflow", "checkboxes",
                  "radio_buttons") and "option_groups" not in element:
        limit = {"overflow": 5, "checkboxes": 10, "radio_buttons": 10}.get(kind, 100)
        errors += _option_errors(element.get("options"), f"{pointer}/options", limit)
    elif kind == "plain_text_input":
        errors += _str_errors(element.get("initial_value"), f"{pointer}/initial_value", 3000)
        for key in ("min_length", "max_length"):
            value = element.get(key)
            if value is not None and (not isinstance(value, int) or not 0 <= value <= 3000):
                errors.append(_err("must be an integer between 0 and 3000", f"{pointer}/{key}"))
    elif kind == "image":
        if not element.get("image_url") and not element.get("slack_file"):
            errors.append(_err("missing required field: image_url", pointer))
        errors += _str_errors(element.get("alt_text"), f"{pointer}/alt_text", 2000)
    return errors


def _block_errors(block: JSON, p: str) -> list[str]:
    kind = block["type"]
    errors: list[str] = []
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(_err("must provide either text or fields", p))
        if "text" in block:
            errors += _text_errors(block["text"], f"{p}/text", MAX_SECTION_TEXT)
        if "fields" in block:
            fields = block["fields"]
            if not isinstance(fields, list) or not fields or len(fields) > 10:
                errors.append(_err("must provide between 1 and 10 items", f"{p}/fields"))
            else:
                for i, field in enumerate(fields):
                    errors += _text_errors(field, f"{p}/fields/{i}", 2000)
        if "accessory" in block:
            errors += _element_errors(block["accessory"], f"{p}/accessory")
    elif kind == "header":
        errors += _text_errors(block.get("text"), f"{p}/text", 150, plain_only=True)
    elif kind in ("actions", "context"):
        limit = 25 if kind == "actions" else 10
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements or len(elements) > limit:
            errors.append(_err(f"must provide between 1 and {limit} items", f"{p}/elements"))
        else:
            seen: set[str] = set()
            for i, element in enumerate(elements):
                ep = f"{p}/elements/{i}"
                if kind == "context" and isinstance(element, dict) and \
                        element.get("type") in ("mrkdwn", "plain_text"):
                    errors += _text_errors(element, ep, MAX_SECTION_TEXT)
                    continue
                errors += _element_errors(element, ep)
                action_id = element.get("action_id") if isinstance(element, dict) else None
                if isinstance(action_id, str):
                    if action_id in seen:
                        errors.append(_err("action_id must be unique", f"{ep}/action_id"))
                    seen.add(action_id)
    elif kind == "input":
        errors += _text_errors(block.get("label"), f"{p}/label", 2000, plain_only=True)
        errors += _text_errors(block.get("hint"), f"{p}/hint", 2000, plain_only=True,
                               required=False)
        if "element" not in block:
            errors.append(_err("missing required field: element", p))
        else:
            errors += _element_errors(block["element"], f"{p}/element")
    elif kind == "image":
        errors += _element_errors(block, p)
        if "title" in block:
            errors += _text_errors(block["title"], f"{p}/title", 2000, plain_only=True)
    elif kind == "rich_text" and not isinstance(block.get("elements"), list):
        errors.append(_err("missing required field: elements", p))
    return errors


def blocks_errors(blocks: Any, pointer: str = "/blocks",
                  max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Slack's complaints about a blocks array (empty when valid), as `[ERROR] ...` strings."""
    if not isinstance(blocks, list):
        return [_err("must be an array", pointer)]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(_err(f"no more than {max_blocks} items allowed", pointer))
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        p = f"{pointer}/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(_err("missing required field: type", p))
            continue
        if block["type"] not in _BLOCK_TYPES:
            errors.append(_err(f"unsupported type: {block['type']}", f"{p}/type"))
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id or len(block_id) > 255:
                errors.append(_err("must be a string of 1 to 255 characters", f"{p}/block_id"))
            elif block_id in block_ids:
                errors.append(_err(f"duplicate block_id: {block_id}", f"{p}/block_id"))
            else:
                block_ids.add(block_id)
        errors += _block_errors(block, p)
    return errors


def view_errors(view: Any, kind: str = "modal") -> list[str]:
    """Slack's complaints about a view payload (empty when valid)."""
    if not isinstance(view, dict):
        return [_err("must be an object", "/view")]
    errors: list[str] = []
    if view.get("type") != kind:
        errors.append(_err(f"must be '{kind}'", "/view/type"))
    if kind == "modal":
        errors += _text_errors(view.get("title"), "/view/title", MAX_VIEW_TITLE, plain_only=True)
        for key in ("submit", "close"):
            errors += _text_errors(view.get(key), f"/view/{key}", MAX_VIEW_TITLE,
                                   plain_only=True, required=False)
    if "blocks" not in view:
        errors.append(_err("missing required field: blocks", "/view"))
    else:
        blocks = view["blocks"]
        errors += blocks_errors(blocks, "/view/blocks", MAX_VIEW_BLOCKS)
        has_input = isinstance(blocks, list) and any(
            isinstance(b, dict) and b.get("type") == "input" for b in blocks)
        if kind == "modal" and has_input and not view.get("submit"):
            errors.append(_err(
                "submit is required when an input block is within the blocks array",
                "/view/submit"))
    errors += _str_errors(view.get("callback_id"), "/view/callback_id", MAX_CALLBACK_ID)
    errors += _str_errors(view.get("private_metadata"), "/view/private_metadata",
                          MAX_PRIVATE_METADATA)
    errors += _str_errors(view.get("external_id"), "/view/external_id", 255)
    return errors


def _parse_multipart(content_type: str, body: bytes) -> JSON:
    """Form fields (str) and file parts (bytes) of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: JSON = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if isinstance(name, str):
            fields[name] = data if part.get_filename() else data.decode("utf-8", "replace")
    return fields


# ---------------------------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------------------------


class FakeSlack:
    """Slack's Web API on 127.0.0.1 (port chosen by the OS), with inspectable state."""

    def __init__(
        self,
        bot_token: str = "xoxb-test-token",
        team_id: str = "T0TEST",
        bot_user_id: str = "UBOT",
        *,
        bot_id: str = "B0TEST",
        app_id: str = "A0TEST",
        team_domain: str = "fakeslack",
    ) -> None:
        self.bot_token = bot_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.team_domain = team_domain
        self.trigger_ttl_s = TRIGGER_TTL_S
        self.response_url_max_uses = RESPONSE_URL_MAX_USES
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._open_connections: set[socket.socket] = set()
        self.connections_accepted = 0
        self._seq = itertools.count(1)
        self._ts_base = int(time.time())
        self._ts_last = 0  # microseconds of the last ts handed out
        self._users: dict[str, JSON] = {}
        self._methods: dict[str, Callable[[JSON], JSON]] = {
            "api.test": lambda args: {"args": args},
            "apps.connections.open": self._apps_connections_open,
            "auth.test": self._auth_test,
            "bookmarks.add": self._bookmarks_add,
            "bookmarks.list": self._bookmarks_list,
            "bookmarks.remove": self._bookmarks_remove,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "conversations.archive": self._conversations_archive,
            "conversations.create": self._conversations_create,
            "conversations.history": self._conversations_history,
            "conversations.info": self._conversations_info,
            "conversations.invite": self._conversations_invite,
            "conversations.join": self._conversations_join,
            "conversations.list": self._conversations_list,
            "conversations.members": self._conversations_members,
            "conversations.replies": self._conversations_replies,
            "conversations.setTopic": self._conversations_set_topic,
            "conversations.unarchive": self._conversations_unarchive,
            "files.completeUploadExternal": self._files_complete_upload_external,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "pins.add": self._pins_add,
            "pins.list": self._pins_list,
            "pins.remove": self._pins_remove,
            "users.conversations": self._users_conversations,
            "users.info": self._users_info,
            "users.list": self._users_list,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
            "views.push": self._views_push,
            "views.update": self._views_update,
        }
        self.app_token = ""  # the xapp- token `apps.connections.open` accepts
        self._socket_url: Callable[[], str] | None = None
        self._clear_state()
        self.add_user(bot_user_id, "incidentbot", is_bot=True)

    def _clear_state(self) -> None:
        self._channels: dict[str, JSON] = {}
        self._messages: dict[str, list[JSON]] = {}
        self._pins: dict[str, list[JSON]] = {}
        self._bookmarks: dict[str, list[JSON]] = {}
        self._views: dict[str, JSON] = {}
        self._view_order: list[str] = []
        self._closed_views: set[str] = set()
        self._home_views: dict[str, JSON] = {}
        self._ephemerals: list[JSON] = []
        self._responses: list[JSON] = []
        self._response_urls: dict[str, JSON] = {}
        self._files: dict[str, JSON] = {}
        self._calls: list[tuple[str, JSON]] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._latency: dict[str | None, float] = {}
        self._hooks: dict[str, list[AnswerHook]] = {}
        self._triggers: dict[str, JSON] = {}
        self._clock_offset = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        """Serve on 127.0.0.1 (a free port) from a daemon thread."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name="fakeslack", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
            self.close_idle_connections()  # kept-alive connections end with the server
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSlack is not running; call start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        """The WebClient base_url: requests arrive at `/api/<method>`."""
        return f"{self.base_url}/api/"

    # -- seeding -------------------------------------------------------------------------------

    def add_user(
        self, user_id: str, name: str, is_bot: bool = False, *,
        real_name: str | None = None, deleted: bool = False,
    ) -> None:
        with self._lock:
            self._users[user_id] = {
                "id": user_id, "name": name, "real_name": real_name or name.title(),
                "is_bot": is_bot, "deleted": deleted,
            }

    def add_channel(
        self, name: str, members: Iterable[str] = (), is_private: bool = False, *,
        channel_id: str | None = None, is_archived: bool = False, topic: str = "",
        creator: str | None = None,
    ) -> str:
        """Create a channel directly (the bot is a member only if listed); returns its ID."""
        with self._lock:
            if any(c.get("name") == name for c in self._channels.values()):
                raise ValueError(f"channel name {name!r} already exists in the fake")
            if channel_id is not None and channel_id in self._channels:
                raise ValueError(f"channel id {channel_id!r} already exists in the fake")
            member_list = list(members)
            channel = self._new_channel(
                name, creator=creator or (member_list[0] if member_list else self.bot_user_id),
                members=member_list, is_private=is_private, channel_id=channel_id)
            channel["is_archived"] = is_archived
            channel["topic"] = topic
            return str(channel["id"])

    def add_message(
        self, channel_id: str, user: str, text: str, *, ts: str | None = None,
        thread_ts: str | None = None, blocks: list[JSON] | None = None,
        metadata: JSON | None = None,
    ) -> str:
        """Store a message as if `user` had posted it (e.g. before sending its event);
        `metadata` as an app posts it ({"event_type": ..., "event_payload": {...}})."""
        with self._lock:
            channel = self._require_channel(channel_id)
            message = self._store_message(channel, user=user, text=text, blocks=blocks,
                                          thread_ts=thread_ts, ts=ts, metadata=metadata)
            return str(message["ts"])

    def edit_message(
        self, channel_id: str, ts: str, text: str, *, blocks: list[JSON] | None = None,
        user: str | None = None,
    ) -> JSON:
        """Edit a stored message as its author would; returns the previous version."""
        with self._lock:
            message = self._require_message(channel_id, ts)
            previous = copy.deepcopy(message)
            self._apply_edit(message, text, blocks, user or message["user"])
            return previous

    def remove_message(self, channel_id: str, ts: str) -> JSON:
        """Delete a stored message (and its pin); returns it."""
        with self._lock:
            message = self._require_message(channel_id, ts)
            self._messages[channel_id].remove(message)
            self._pins[channel_id] = [p for p in self._pins.get(channel_id, []) if p["ts"] != ts]
            return copy.deepcopy(message)

    def new_ts(self) -> str:
        """A fresh message timestamp, unique and increasing ("1700000000.000100" style)."""
        with self._lock:
            return self._next_ts()

    def mint_trigger_id(self, user_id: str | None = None) -> str:
        """A trigger_id as an interaction would carry: single use, expires after trigger_ttl_s."""
        with self._lock:
            trigger = f"{next(self._seq):013d}.{int(time.time())}.{secrets.token_hex(16)}"
            self._triggers[trigger] = {"minted": self.clock(), "used": False, "user": user_id}
            return trigger

    def new_response_url(self, *, channel_id: str | None = None, user_id: str | None = None) -> str:
        """A response URL on the fake; JSON posted there lands in `responses`."""
        with self._lock:
            url_id = f"{next(self._seq)}{secrets.token_hex(6)}"
            self._response_urls[url_id] = {
                "created": self.clock(), "uses": 0, "channel_id": channel_id, "user_id": user_id}
        return f"{self.base_url}/response/{url_id}"

    def clock(self) -> float:
        """The fake's monotonic clock (trigger and response URL expiry); see advance_clock()."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock forward, e.g. past a trigger_id's 3 s lifetime."""
        with self._lock:
            self._clock_offset += seconds

    # -- fault injection -----------------------------------------------------------------------

    def fail_next(
        self, method: str, error: str | None = None, *, status: int = 200,
        retry_after: int | None = None, times: int = 1, reset_connection: bool = False,
    ) -> None:
        """Make the next `times` calls of `method` fail (one fault consumed per call).

        `method` is a Web API method, or "response_url" / "upload" for those endpoints.
        `status=429` answers `ratelimited` (plus `Retry-After` when given), 5xx a server error,
        `reset_connection=True` drops the connection without answering.
        """
        fault = _Fault(error, status, retry_after, reset_connection)
        with self._lock:
            self._faults.setdefault(method, deque()).extend([fault] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_latency(self, seconds: float, method: str | None = None) -> None:
        """Delay every answer (or only `method`'s) by `seconds`."""
        with self._lock:
            self._latency[method] = seconds

    def before_answer(self, method: str, hook: AnswerHook) -> None:
        """Run `hook(args, answer)` each time `method` has done its work (a message stored,
        say) and before its answer leaves; `args` as in `calls`. A hook returning True drops
        the connection instead of answering: the caller never learns the outcome, as when
        it dies mid-call. Hooks run on the request's thread, outside the fake's lock (they
        may read the fake), until `reset()`."""
        with self._lock:
            self._hooks.setdefault(method, []).append(hook)

    def reset(self) -> None:
        """Forget everything except users."""
        with self._lock:
            self._clear_state()

    # -- read helpers --------------------------------------------------------------------------

    @property
    def calls(self) -> list[tuple[str, JSON]]:
        """(method, args) for every request received, in order; JSON-encoded args decoded."""
        with self._lock:
            return copy.deepcopy(self._calls)

    def calls_to(self, method: str) -> list[JSON]:
        with self._lock:
            return [copy.deepcopy(args) for name, args in self._calls if name == method]

    @property
    def users(self) -> dict[str, JSON]:
        with self._lock:
            return copy.deepcopy(self._users)

    def user(self, user_id: str) -> JSON:
        with self._lock:
            if user_id not in self._users:
                raise NotFound(user_id)
            return copy.deepcopy(self._users[user_id])

    def channel(self, channel_id: str) -> JSON:
        """The channel's state: id, name, is_private, is_archived, topic (str), members (set)..."""
        with self._lock:
            return copy.deepcopy(self._require_channel(channel_id))

    def channel_by_name(self, name: str) -> JSON | None:
        with self._lock:
            found = next((c for c in self._channels.values() if c.get("name") == name), None)
            return copy.deepcopy(found)

    def channels(self) -> list[JSON]:
        with self._lock:
            return copy.deepcopy(list(self._channels.values()))

    def messages(self, channel_id: str) -> list[JSON]:
        """Every message in the channel (thread replies included), oldest first.

        Each has ts, user, text, blocks, thread_ts, edited, files, metadata (None, or what
        chat.postMessage stored) and `updates` (one entry per chat.update).
        """
        with self._lock:
            return copy.deepcopy(self._messages.get(channel_id, []))

    def message(self, channel_id: str, ts: str) -> JSON:
        with self._lock:
            return copy.deepcopy(self._require_message(channel_id, ts))

    def updates(self, channel_id: str, ts: str) -> list[JSON]:
        """The chat.update history of one message: [{ts, text, blocks}, ...]."""
        with self._lock:
            return copy.deepcopy(self._require_message(channel_id, ts)["updates"])

    def api_message(self, channel_id: str, ts: str, *, with_metadata: bool = False) -> JSON | None:
        """A message shaped as the Web API (conversations.history) would return it
        (`with_metadata`: as with include_all_metadata)."""
        with self._lock:
            message = self._find_message(channel_id, ts)
            return None if message is None else self._render_message(
                channel_id, message, with_metadata=with_metadata)

    def pins(self, channel_id: str) -> list[JSON]:
        """The pinned messages of a channel, in pin order."""
        with self._lock:
            found = []
            for pin in self._pins.get(channel_id, []):
                message = self._find_message(channel_id, pin["ts"])
                if message is not None:
                    found.append(copy.deepcopy(message))
            return found

    def bookmarks(self, channel_id: str) -> list[JSON]:
        with self._lock:
            return copy.deepcopy(self._bookmarks.get(channel_id, []))

    def view(self, view_id: str) -> JSON:
        with self._lock:
            if view_id not in self._views:
                raise NotFound(view_id)
            return copy.deepcopy(self._views[view_id])

    def last_view(self) -> JSON | None:
        """The view most recently opened, pushed or updated."""
        with self._lock:
            return copy.deepcopy(self._views[self._view_order[-1]]) if self._view_order else None

    def all_views(self) -> list[JSON]:
        with self._lock:
            return copy.deepcopy([self._views[v] for v in self._views])

    def view_is_open(self, view_id: str) -> bool:
        with self._lock:
            return view_id in self._views and view_id not in self._closed_views

    def home_view(self, user_id: str) -> JSON | None:
        with self._lock:
            return copy.deepcopy(self._home_views.get(user_id))

    def ephemerals(self, user: str | None = None) -> list[JSON]:
        with self._lock:
            return copy.deepcopy([e for e in self._ephemerals if user in (None, e["user"])])

    @property
    def responses(self) -> list[JSON]:
        """Payloads posted to response URLs, each with `url_id` (the URL's last segment)."""
        with self._lock:
            return copy.deepcopy(self._responses)

    def responses_to(self, response_url: str) -> list[JSON]:
        url_id = response_url.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            return copy.deepcopy([r for r in self._responses if r["url_id"] == url_id])

    @property
    def files(self) -> dict[str, JSON]:
        """Uploaded files: {id: {name, title, content (bytes), channels, ...}}."""
        with self._lock:
            return copy.deepcopy(self._files)

    # -- view lifecycle driven by interaction acks (used by the driver) ------------------------

    def apply_view_ack(self, view_id: str, ack: JSON | None) -> list[str]:
        """Apply a view_submission ack's `response_action` as Slack would; returns view errors."""
        with self._lock:
            if view_id not in self._views:
                raise NotFound(view_id)
            action = (ack or {}).get("response_action")
            if action == "errors":
                return []
            if action == "clear":
                self._closed_views.update(self._views)
                return []
            if action in ("update", "push"):
                view = (ack or {}).get("view")
                errors = view_errors(view)
                if errors:
                    return errors
                assert isinstance(view, dict)
                current = self._views[view_id]
                if action == "update":
                    self._store_view(view, view_id=view_id,
                                     previous_view_id=current["previous_view_id"],
                                     root_view_id=current["root_view_id"])
                else:
                    self._store_view(view, previous_view_id=view_id,
                                     root_view_id=current["root_view_id"])
                return []
            self._closed_views.add(view_id)
            return []

    def close_view(self, view_id: str) -> None:
        with self._lock:
            self._closed_views.add(view_id)

    # -- connections ---------------------------------------------------------------------------

    def _connected(self, connection: socket.socket) -> None:
        with self._lock:
            self._open_connections.add(connection)
            self.connections_accepted += 1

    def _disconnected(self, connection: socket.socket) -> None:
        with self._lock:
            self._open_connections.discard(connection)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open_connections)

    def close_idle_connections(self) -> None:
        """Close every kept-alive connection from the server's side, as Slack's edge does
        after an idle timeout (call it while no request is in flight)."""
        with self._lock:
            connections = list(self._open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    # -- HTTP plumbing -------------------------------------------------------------------------

    def _handle(self, req: _Handler) -> None:
        url = urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        parts = [p for p in url.path.split("/") if p]
        if len(parts) == 2 and parts[0] == "api":
            self._serve_api(req, parts[1], url.query, body)
        elif len(parts) == 2 and parts[0] == "upload":
            self._serve_upload(req, parts[1], body)
        elif len(parts) == 2 and parts[0] == "response":
            self._serve_response_url(req, parts[1], body)
        else:
            self._reply(req, 404, b"not_found", "text/plain")

    @staticmethod
    def _reply(
        req: _Handler, status: int, body: bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            req.send_response(status)
            req.send_header("Content-Type", content_type)
            req.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                req.send_header(key, value)
            req.end_headers()
            req.wfile.write(body)
        except OSError:  # the client gave up (e.g. its timeout): nothing to answer
            req.close_connection = True

    def _reply_json(self, req: _Handler, payload: JSON, status: int = 200,
                    headers: dict[str, str] | None = None) -> None:
        self._reply(req, status, json.dumps(payload).encode(), headers=headers)

    @staticmethod
    def _drop_connection(req: _Handler) -> None:
        """Close the socket with a TCP reset and no answer."""
        req.close_connection = True
        try:
            req.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            req.connection.close()
        except OSError:
            pass

    def set_socket_mode(self, url: str | Callable[[], str], app_token: str) -> None:
        """Answer `apps.connections.open` with `url` (a `ws://` URL, or a function returning a
        fresh one per call), for callers presenting `app_token`; others get `invalid_auth`."""
        if not app_token.startswith("xapp-"):
            raise ValueError("an app-level token starts with xapp-")
        with self._lock:
            self._socket_url = url if callable(url) else (lambda: url)
            self.app_token = app_token

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        return queue.popleft() if queue else None

    def _serve_fault(self, req: _Handler, fault: _Fault, *, as_json: bool = True) -> None:
        if fault.reset_connection:
            self._drop_connection(req)
            return
        default = {429: "ratelimited"}.get(fault.status, "internal_error")
        error = fault.error or default
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if as_json:
            self._reply_json(req, {"ok": False, "error": error}, fault.status, headers)
        else:
            self._reply(req, fault.status, error.encode(), "text/plain", headers)

    def _serve_api(self, req: _Handler, method: str, query: str, body: bytes) -> None:
        parse_error: SlackError | None = None
        try:
            args = self._parse_args(req.headers.get("Content-Type", ""), query, body)
        except SlackError as exc:
            args, parse_error = {}, exc
        header = req.headers.get("Authorization", "")
        token = header[len("Bearer "):].strip() if header.startswith("Bearer ") else ""
        token = token or _s(args, "token")
        args.pop("token", None)
        with self._lock:
            self._calls.append((method, self._loggable(args)))
            fault = self._take_fault(method)
            delay = self._latency.get(method, self._latency.get(None, 0.0))
        if delay:
            time.sleep(delay)
        if fault is not None:
            self._serve_fault(req, fault)
            return
        try:
            if parse_error is not None:
                raise parse_error
            handler = self._methods.get(method)
            if handler is None:
                raise SlackError("unknown_method", req_method=method)
            if method not in _NO_AUTH:
                expected = self.app_token if method in _APP_TOKEN else self.bot_token
                if not token:
                    raise SlackError("not_authed")
                if token != expected or not expected:
                    raise SlackError("invalid_auth")
            with self._lock:
                payload = {"ok": True, **handler(args)}
        except SlackError as exc:
            payload = {"ok": False, "error": exc.error, **exc.extra}
        if self._run_hooks(method, args, payload):
            self._drop_connection(req)
            return
        self._reply_json(req, payload)

    def _run_hooks(self, method: str, args: JSON, payload: JSON) -> bool:
        """Run the `before_answer` hooks of `method`; True if one asks to drop the answer."""
        with self._lock:
            hooks = list(self._hooks.get(method, []))
        logged = self._loggable(args)
        drop = False
        for hook in hooks:
            drop = bool(hook(copy.deepcopy(logged), copy.deepcopy(payload))) or drop
        return drop

    @staticmethod
    def _parse_args(content_type: str, query: str, body: bytes) -> JSON:
        args: JSON = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        kind = content_type.split(";")[0].strip().lower()
        if not body:
            return args
        try:
            if kind == "application/json":
                try:
                    data = json.loads(body.decode("utf-8"))
                except ValueError:
                    raise SlackError("invalid_json") from None
                if not isinstance(data, dict):
                    raise SlackError("json_not_object")
                args.update(data)
            elif kind == "multipart/form-data":
                args.update(_parse_multipart(content_type, body))
            else:
                form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
                args.update({k: v[0] for k, v in form.items()})
        except UnicodeDecodeError:
            raise SlackError("invalid_charset") from None
        return args

    @staticmethod
    def _loggable(args: JSON) -> JSON:
        logged = copy.deepcopy(args)
        for key in _JSON_ARGS:
            if isinstance(logged.get(key), str):
                with contextlib.suppress(ValueError):
                    logged[key] = json.loads(logged[key])
        return logged

    def _serve_upload(self, req: _Handler, file_id: str, body: bytes) -> None:
        content_type = req.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            parts = _parse_multipart(content_type, body)
            body = next((v for v in parts.values() if isinstance(v, bytes)), b"")
        with self._lock:
            self._calls.append(("upload", {"file_id": file_id, "length": len(body)}))
            fault = self._take_fault("upload")
            record = self._files.get(file_id)
            if fault is None and record is not None:
                record["content"] = body
        if fault is not None:
            self._serve_fault(req, fault, as_json=False)
        elif record is None:
            self._reply(req, 404, b"file_not_found", "text/plain")
        else:
            self._reply(req, 200, f"OK - {len(body)}".encode(), "text/plain")

    def _serve_response_url(self, req: _Handler, url_id: str, body: bytes) -> None:
        try:
            text = body.decode("utf-8")
            if text.startswith("payload="):
                text = parse_qs(text)["payload"][0]
            payload = json.loads(text)
        except (UnicodeDecodeError, ValueError, KeyError):
            payload = None
        with self._lock:
            self._calls.append(("response_url", {"url_id": url_id, "payload": payload}))
            fault = self._take_fault("response_url")
            record = self._response_urls.get(url_id)
            status, answer = 200, "ok"
            if fault is not None:
                pass
            elif record is None:
                status, answer = 404, "no_service"
            elif self.clock() - record["created"] > RESPONSE_URL_TTL_S:
                status, answer = 404, "expired_url"
            elif record["uses"] >= self.response_url_max_uses:
                status, answer = 404, "used_url"
            elif not isinstance(payload, dict):
                status, answer = 400, "invalid_payload"
            elif not (payload.get("text") or payload.get("blocks") or payload.get("attachments")
                      or payload.get("delete_original")):
                status, answer = 400, "no_text"
            else:
                record["uses"] += 1
                self._responses.append({**payload, "url_id": url_id})
        if fault is not None:
            self._serve_fault(req, fault, as_json=False)
        else:
            self._reply(req, status, answer.encode(), "text/plain")

    # -- internal state helpers (call with the lock held) --------------------------------------

    def _next_ts(self) -> str:
        """Slack's `ts` is the moment the message was stored, in microseconds: the wall
        clock here, kept unique and increasing (at least 100 µs apart)."""
        self._ts_last = max(time.time_ns() // 1000, self._ts_last + 100)
        return f"{self._ts_last // 1_000_000}.{self._ts_last % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._seq):08d}"

    def _new_channel(
        self, name: str | None, *, creator: str, members: Iterable[str], is_private: bool,
        channel_id: str | None = None, is_im: bool = False, user: str | None = None,
    ) -> JSON:
        channel: JSON = {
            "id": channel_id or self._new_id("D" if is_im else "C"),
            "name": name, "is_private": is_private or is_im, "is_archived": False,
            "is_im": is_im, "user": user, "topic": "", "topic_creator": "", "topic_last_set": 0,
            "purpose": "", "creator": creator, "created": int(time.time()),
            "members": set(members),
        }
        self._channels[channel["id"]] = channel
        self._messages[channel["id"]] = []
        return channel

    def _require_channel(self, channel_id: str) -> JSON:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise NotFound(channel_id)
        return channel

    def _find_message(self, channel_id: str, ts: str) -> JSON | None:
        return next((m for m in self._messages.get(channel_id, []) if m["ts"] == ts), None)

    def _require_message(self, channel_id: str, ts: str) -> JSON:
        message = self._find_message(channel_id, ts)
        if message is None:
            raise NotFound(f"{channel_id}/{ts}")
        return message

    def _visible(self, channel_id: str) -> JSON:
        """The channel as the bot sees it: private channels it is not in do not exist."""
        channel = self._channels.get(channel_id)
        if channel is None or (channel["is_private"] and self.bot_user_id not in
                               channel["members"]):
            raise SlackError("channel_not_found")
        return channel

    def _writable(self, channel_id: str) -> JSON:
        channel = self._visible(channel_id)
        if channel["is_archived"]:
            raise SlackError("is_archived")
        if self.bot_user_id not in channel["members"]:
            raise SlackError("not_in_channel")
        return channel

    def _message_target(self, value: str) -> JSON:
        """chat.postMessage's `channel`: a channel ID, a #name, or a user ID (their DM)."""
        if value in self._channels:
            return self._visible(value)
        if value in self._users:
            im = next((c for c in self._channels.values()
                       if c["is_im"] and c["user"] == value), None)
            if im is None:
                im = self._new_channel(None, creator=self.bot_user_id, is_private=True,
                                       members=[self.bot_user_id, value], is_im=True, user=value)
            return im
        name = value.removeprefix("#")
        for channel in self._channels.values():
            if name and channel.get("name") == name:
                return self._visible(channel["id"])
        raise SlackError("channel_not_found")

    def _store_message(
        self, channel: JSON, *, user: str, text: str, blocks: list[JSON] | None = None,
        thread_ts: str | None = None, ts: str | None = None,
        attachments: list[JSON] | None = None, files: list[str] | None = None,
        metadata: JSON | None = None,
    ) -> JSON:
        message: JSON = {
            "type": "message", "ts": ts or self._next_ts(), "user": user, "text": text,
            "blocks": copy.deepcopy(blocks) if blocks else [],
            "attachments": copy.deepcopy(attachments) if attachments else [],
            "thread_ts": thread_ts or None, "edited": None, "files": list(files or []),
            "updates": [], "metadata": copy.deepcopy(metadata),
        }
        self._messages[channel["id"]].append(message)
        return message

    def _apply_edit(
        self, message: JSON, text: str | None, blocks: list[JSON] | None, user: str,
        attachments: list[JSON] | None = None,
    ) -> None:
        edit_ts = self._next_ts()
        if text is not None:
            message["text"] = text
        if blocks is not None:
            message["blocks"] = copy.deepcopy(blocks)
        if attachments is not None:
            message["attachments"] = copy.deepcopy(attachments)
        message["edited"] = {"user": user, "ts": edit_ts}
        message["updates"].append({"ts": edit_ts, "text": message["text"],
                                   "blocks": copy.deepcopy(message["blocks"])})

    def _render_user(self, user: JSON) -> JSON:
        profile: JSON = {
            "real_name": user["real_name"], "real_name_normalized": user["real_name"],
            "display_name": user["name"], "display_name_normalized": user["name"],
            "team": self.team_id,
        }
        if user["is_bot"]:
            profile["bot_id"] = self.bot_id if user["id"] == self.bot_user_id else "B" + user["id"]
        else:
            profile["email"] = f"{user['name']}@example.com"
        return {
            "id": user["id"], "team_id": self.team_id, "name": user["name"],
            "deleted": user["deleted"], "color": "9f69e7", "real_name": user["real_name"],
            "tz": "Etc/UTC", "tz_label": "Coordinated Universal Time", "tz_offset": 0,
            "profile": profile, "is_admin": False, "is_owner": False, "is_primary_owner": False,
            "is_restricted": False, "is_ultra_restricted": False, "is_bot": user["is_bot"],
            "is_app_user": False, "updated": self._ts_base,
        }

    def _render_channel(self, channel: JSON, *, num_members: bool = False) -> JSON:
        if channel["is_im"]:
            return {
                "id": channel["id"], "created": channel["created"], "is_im": True,
                "is_org_shared": False, "user": channel["user"], "is_user_deleted": False,
                "priority": 0,
            }
        out: JSON = {
            "id": channel["id"], "name": channel["name"], "is_channel": True, "is_group": False,
            "is_im": False, "is_mpim": False, "is_private": channel["is_private"],
            "created": channel["created"], "is_archived": channel["is_archived"],
            "is_general": False, "unlinked": 0, "name_normalized": channel["name"],
            "is_shared": False, "is_org_shared": False, "is_pending_ext_shared": False,
            "pending_shared": [], "context_team_id": self.team_id,
            "updated": channel["created"] * 1000, "parent_conversation": None,
            "creator": channel["creator"], "is_ext_shared": False,
            "shared_team_ids": [self.team_id], "pending_connected_team_ids": [],
            "is_member": self.bot_user_id in channel["members"],
            "topic": {"value": channel["topic"], "creator": channel["topic_creator"],
                      "last_set": channel["topic_last_set"]},
            "purpose": {"value": channel["purpose"], "creator": "", "last_set": 0},
            "previous_names": [],
        }
        if num_members:
            out["num_members"] = len(channel["members"])
        return out

    def _render_file(self, file_id: str) -> JSON:
        record = self._files[file_id]
        mimetype = mimetypes.guess_type(record["name"])[0] or "application/octet-stream"
        return {
            "id": file_id, "created": record["created"], "timestamp": record["created"],
            "name": record["name"], "title": record["title"], "mimetype": mimetype,
            "filetype": record["name"].rsplit(".", 1)[-1] if "." in record["name"] else "binary",
            "user": record["user"], "size": len(record["content"] or b""),
            "is_public": bool(record["channels"]),
            "url_private": f"https://files.slack.com/files-pri/{self.team_id}-{file_id}/"
                           f"{record['name']}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{record['user']}/"
                         f"{file_id}/{record['name']}",
            "channels": list(record["channels"]),
        }

    def _render_message(self, channel_id: str, message: JSON, *,
                        with_metadata: bool = False) -> JSON:
        """A stored message as the Web API shows it; its metadata only `with_metadata` (what
        conversations.history and .replies do with include_all_metadata)."""
        out: JSON = {"type": "message", "user": message["user"], "text": message["text"],
                     "ts": message["ts"], "team": self.team_id}
        if with_metadata and message.get("metadata"):
            out["metadata"] = copy.deepcopy(message["metadata"])
        if message["user"] == self.bot_user_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = self.app_id
        if message["blocks"]:
            out["blocks"] = copy.deepcopy(message["blocks"])
        if message["attachments"]:
            out["attachments"] = copy.deepcopy(message["attachments"])
        if message["files"]:
            out["files"] = [self._render_file(f) for f in message["files"] if f in self._files]
            out["upload"] = True
        if message["thread_ts"] and message["thread_ts"] != message["ts"]:
            out["thread_ts"] = message["thread_ts"]
            parent = self._find_message(channel_id, message["thread_ts"])
            if parent is not None:
                out["parent_user_id"] = parent["user"]
        replies = [m for m in self._messages.get(channel_id, [])
                   if m["thread_ts"] == message["ts"] and m["ts"] != message["ts"]]
        if replies:
            out.update(thread_ts=message["ts"], reply_count=len(replies),
                       reply_users=sorted({m["user"] for m in replies}),
                       latest_reply=replies[-1]["ts"])
        if message["edited"]:
            out["edited"] = dict(message["edited"])
        return out

    def _message_content(self, args: JSON, *, update: bool = False) -> tuple[
            str | None, list[JSON] | None, list[JSON] | None]:
        """text, blocks and attachments, checked as chat.postMessage / chat.update do."""
        text = None if args.get("text") is None else str(args["text"])
        blocks: list[JSON] | None = None
        raw = args.get("blocks")
        if raw not in (None, ""):
            try:
                decoded = _json_arg(raw)
            except ValueError:
                problem = _err("must be a valid JSON array", "/blocks")
                raise SlackError("invalid_blocks", errors=[problem],
                                 response_metadata={"messages": [problem]}) from None
            problems = blocks_errors(decoded)
            if problems:
                raise SlackError("invalid_blocks", errors=problems,
                                 response_metadata={"messages": problems})
            blocks = decoded
        attachments: list[JSON] | None = None
        raw = args.get("attachments")
        if raw not in (None, ""):
            try:
                decoded = _json_arg(raw)
            except ValueError:
                raise SlackError("invalid_attachments") from None
            if not isinstance(decoded, list):
                raise SlackError("invalid_attachments")
            if len(decoded) > 100:
                raise SlackError("too_many_attachments")
            attachments = decoded
        if not text and not blocks and not attachments and not (update and blocks == []):
            raise SlackError("no_text")
        if text is not None and len(text) > MAX_MESSAGE_TEXT:
            raise SlackError("msg_too_long")
        return text, blocks, attachments

    def _check_trigger(self, trigger_id: str) -> None:
        if not trigger_id:
            raise SlackError("invalid_arguments", response_metadata={
                "messages": ["[ERROR] missing required field: trigger_id"]})
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            raise SlackError("invalid_trigger_id")
        if trigger["used"]:
            raise SlackError("exchanged_trigger_id")
        if self.clock() - trigger["minted"] > self.trigger_ttl_s:
            raise SlackError("expired_trigger_id")

    def _view_arg(self, args: JSON, kind: str) -> JSON:
        try:
            view = _json_arg(args.get("view"))
        except ValueError:
            view = None
        problems = view_errors(view, kind) if view is not None else [
            _err("missing required field: view", "/view")]
        if problems:
            raise SlackError("invalid_arguments", response_metadata={"messages": problems})
        assert isinstance(view, dict)
        external_id = view.get("external_id") or ""
        if external_id and any(v["external_id"] == external_id for v in self._views.values()):
            raise SlackError("duplicate_external_id")
        return view

    def _store_view(
        self, view: JSON, *, view_id: str | None = None, previous_view_id: str | None = None,
        root_view_id: str | None = None,
    ) -> JSON:
        view_id = view_id or self._new_id("V")
        blocks = copy.deepcopy(view.get("blocks") or [])
        taken = [b["block_id"] for b in blocks if b.get("block_id")]
        for block in blocks:  # Slack fills in the ids it will key view.state.values by
            if not block.get("block_id"):
                block["block_id"] = _short_id(taken)
                taken.append(block["block_id"])
            element = block.get("element")
            if block["type"] == "input" and isinstance(element, dict) and \
                    not element.get("action_id"):
                element["action_id"] = _short_id()
        stored: JSON = {
            "id": view_id, "team_id": self.team_id, "type": view["type"], "blocks": blocks,
            "private_metadata": view.get("private_metadata") or "",
            "callback_id": view.get("callback_id") or "", "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "title": copy.deepcopy(view.get("title")),
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "close": copy.deepcopy(view.get("close")), "submit": copy.deepcopy(view.get("submit")),
            "previous_view_id": previous_view_id, "root_view_id": root_view_id or view_id,
            "app_id": self.app_id, "external_id": view.get("external_id") or "",
            "app_installed_team_id": self.team_id, "bot_id": self.bot_id,
        }
        self._views[view_id] = stored
        self._closed_views.discard(view_id)
        if view_id in self._view_order:
            self._view_order.remove(view_id)
        self._view_order.append(view_id)
        return stored

    # -- Web API methods (called with the lock held) -------------------------------------------

    def _apps_connections_open(self, args: JSON) -> JSON:
        if self._socket_url is None:
            raise SlackError("invalid_auth")
        return {"url": self._socket_url()}

    def _auth_test(self, args: JSON) -> JSON:
        return {
            "url": f"https://{self.team_domain}.slack.com/", "team": "Fake Slack",
            "user": self._users[self.bot_user_id]["name"], "team_id": self.team_id,
            "user_id": self.bot_user_id, "bot_id": self.bot_id, "is_enterprise_install": False,
        }

    def _conversations_create(self, args: JSON) -> JSON:
        name = _s(args, "name")
        if not name:
            raise SlackError("invalid_name_required")
        if len(name) > MAX_CHANNEL_NAME:
            raise SlackError("invalid_name_maxlength")
        if all(c in "-_" for c in name):
            raise SlackError("invalid_name_punctuation")
        if not all(c in "-_" or c.isdigit() or (c.isalpha() and c == c.lower()) for c in name):
            raise SlackError("invalid_name_specials")
        if any(c.get("name") == name for c in self._channels.values()):
            raise SlackError("name_taken")
        channel = self._new_channel(name, creator=self.bot_user_id, members=[self.bot_user_id],
                                    is_private=_flag(args, "is_private"))
        return {"channel": self._render_channel(channel)}

    def _conversations_invite(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        if channel["is_im"]:
            raise SlackError("method_not_supported_for_channel_type")
        if channel["is_archived"]:
            raise SlackError("is_archived")
        if self.bot_user_id not in channel["members"]:
            raise SlackError("not_in_channel")
        users = [u.strip() for u in _s(args, "users").split(",") if u.strip()]
        if not users:
            raise SlackError("no_user")
        errors: list[JSON] = []
        invite: list[str] = []
        for user in users:
            record = self._users.get(user)
            error = None
            if user == self.bot_user_id:
                error = "cant_invite_self"
            elif record is None:
                error = "user_not_found"
            elif record["deleted"]:
                error = "cant_invite"
            elif user in channel["members"]:
                error = "already_in_channel"
            else:
                invite.append(user)
            if error:
                errors.append({"user": user, "ok": False, "error": error})
        extra = {"errors": errors} if len(users) > 1 else {}
        hard = [e for e in errors if e["error"] != "already_in_channel"]
        if hard and not _flag(args, "force"):
            raise SlackError(hard[0]["error"], **extra)
        if not invite:
            raise SlackError(errors[0]["error"] if not hard else hard[0]["error"], **extra)
        channel["members"].update(invite)
        return {"channel": self._render_channel(channel), **extra}

    def _conversations_set_topic(self, args: JSON) -> JSON:
        channel = self._writable(_s(args, "channel"))
        topic = _s(args, "topic")
        if len(topic) > MAX_TOPIC:
            raise SlackError("too_long")
        channel.update(topic=topic, topic_creator=self.bot_user_id,
                       topic_last_set=int(time.time()))
        return {"channel": self._render_channel(channel)}

    def _conversations_info(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        return {"channel": self._render_channel(
            channel, num_members=_flag(args, "include_num_members"))}

    def _conversations_join(self, args: JSON) -> JSON:
        channel = self._channels.get(_s(args, "channel"))
        if channel is None:
            raise SlackError("channel_not_found")
        if channel["is_private"]:
            raise SlackError("method_not_supported_for_channel_type")
        if channel["is_archived"]:
            raise SlackError("is_archived")
        extra: JSON = {}
        if self.bot_user_id in channel["members"]:
            extra = {"warning": "already_in_channel",
                     "response_metadata": {"warnings": ["already_in_channel"]}}
        channel["members"].add(self.bot_user_id)
        return {"channel": self._render_channel(channel), **extra}

    def _conversations_members(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        return {"members": sorted(channel["members"]),
                "response_metadata": {"next_cursor": ""}}

    def _conversations_archive(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        if channel["is_im"]:
            raise SlackError("method_not_supported_for_channel_type")
        if channel["is_archived"]:
            raise SlackError("already_archived")
        if self.bot_user_id not in channel["members"]:
            raise SlackError("not_in_channel")
        channel["is_archived"] = True
        return {}

    def _conversations_unarchive(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        if not channel["is_archived"]:
            raise SlackError("not_archived")
        channel["is_archived"] = False
        return {}

    def _conversations_history(self, args: JSON) -> JSON:
        """Top-level messages between `oldest` and `latest`, newest first, `limit` a page;
        `next_cursor` continues with older ones. Metadata only with include_all_metadata."""
        channel = self._visible(_s(args, "channel"))
        if self.bot_user_id not in channel["members"]:
            raise SlackError("not_in_channel")
        latest, oldest = _s(args, "latest"), _s(args, "oldest")
        inclusive = _flag(args, "inclusive")
        limit = int(_s(args, "limit") or 100)
        before = _cursor_ts(_s(args, "cursor")) if _s(args, "cursor") else None
        found = []
        for message in sorted(self._messages[channel["id"]], key=lambda m: float(m["ts"]),
                              reverse=True):
            if message["thread_ts"] not in (None, message["ts"]):
                continue
            ts = float(message["ts"])
            if latest and (ts > float(latest) or (ts == float(latest) and not inclusive)):
                continue
            if oldest and (ts < float(oldest) or (ts == float(oldest) and not inclusive)):
                continue
            if before is not None and ts >= float(before):
                continue
            found.append(message)
        page, has_more = found[:limit], len(found) > limit
        with_metadata = _flag(args, "include_all_metadata")
        return {"messages": [self._render_message(channel["id"], m, with_metadata=with_metadata)
                             for m in page],
                "has_more": has_more,
                "pin_count": len(self._pins.get(channel["id"], [])),
                "response_metadata": {
                    "next_cursor": _history_cursor(page[-1]["ts"]) if has_more else ""}}

    def _conversations_replies(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        ts = _s(args, "ts")
        parent = self._find_message(channel["id"], ts)
        if parent is None:
            raise SlackError("thread_not_found")
        thread = [parent] + [m for m in self._messages[channel["id"]]
                             if m["thread_ts"] == ts and m["ts"] != ts]
        with_metadata = _flag(args, "include_all_metadata")
        return {"messages": [self._render_message(channel["id"], m, with_metadata=with_metadata)
                             for m in thread],
                "has_more": False}

    def _conversations_list(self, args: JSON) -> JSON:
        types = set((_s(args, "types") or "public_channel").split(","))
        found = []
        for channel in self._channels.values():
            kind = "im" if channel["is_im"] else (
                "private_channel" if channel["is_private"] else "public_channel")
            if kind not in types or (_flag(args, "exclude_archived") and channel["is_archived"]):
                continue
            if channel["is_private"] and self.bot_user_id not in channel["members"]:
                continue
            found.append(self._render_channel(channel))
        return {"channels": found, "response_metadata": {"next_cursor": ""}}

    def _chat_post_message(self, args: JSON) -> JSON:
        channel = self._message_target(_s(args, "channel"))
        if channel["is_archived"]:
            raise SlackError("is_archived")
        if self.bot_user_id not in channel["members"]:
            raise SlackError("not_in_channel")
        text, blocks, attachments = self._message_content(args)
        metadata, warning = _message_metadata(args.get("metadata"))
        message = self._store_message(channel, user=self.bot_user_id, text=text or "",
                                      blocks=blocks, thread_ts=_s(args, "thread_ts") or None,
                                      attachments=attachments, metadata=metadata)
        answer: JSON = {"channel": channel["id"], "ts": message["ts"],
                        "message": self._render_message(channel["id"], message)}
        if warning is not None:  # Slack's shape for a call that worked with a warning
            answer.update(warning=warning, response_metadata={"warnings": [warning]})
        return answer

    def _chat_update(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        message = self._find_message(channel["id"], _s(args, "ts"))
        if message is None:
            raise SlackError("message_not_found")
        if message["user"] != self.bot_user_id:
            raise SlackError("cant_update_message")
        if channel["is_archived"]:
            raise SlackError("is_archived")
        text, blocks, attachments = self._message_content(args, update=True)
        self._apply_edit(message, text, blocks, self.bot_user_id, attachments)
        return {"channel": channel["id"], "ts": message["ts"], "text": message["text"],
                "message": self._render_message(channel["id"], message)}

    def _chat_delete(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        message = self._find_message(channel["id"], _s(args, "ts"))
        if message is None:
            raise SlackError("message_not_found")
        if message["user"] != self.bot_user_id:
            raise SlackError("cant_delete_message")
        self.remove_message(channel["id"], message["ts"])
        return {"channel": channel["id"], "ts": message["ts"]}

    def _chat_post_ephemeral(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        user = _s(args, "user")
        if channel["is_archived"]:
            raise SlackError("is_archived")
        if self.bot_user_id not in channel["members"]:
            raise SlackError("not_in_channel")
        if user not in channel["members"]:
            raise SlackError("user_not_in_channel")
        text, blocks, attachments = self._message_content(args)
        ts = self._next_ts()
        self._ephemerals.append({
            "channel": channel["id"], "user": user, "text": text or "", "blocks": blocks or [],
            "attachments": attachments or [], "ts": ts,
            "thread_ts": _s(args, "thread_ts") or None,
        })
        return {"message_ts": ts}

    def _chat_get_permalink(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        message = self._find_message(channel["id"], _s(args, "message_ts"))
        if message is None:
            raise SlackError("message_not_found")
        link = (f"https://{self.team_domain}.slack.com/archives/{channel['id']}/"
                f"p{message['ts'].replace('.', '')}")
        if message["thread_ts"] and message["thread_ts"] != message["ts"]:
            link += f"?thread_ts={message['thread_ts']}&cid={channel['id']}"
        return {"channel": channel["id"], "permalink": link}

    def _pins_add(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        ts = _s(args, "timestamp")
        if not ts:
            raise SlackError("no_item_specified")
        if self.bot_user_id not in channel["members"]:
            raise SlackError("not_in_channel")
        if channel["is_archived"]:
            raise SlackError("is_archived")
        if self._find_message(channel["id"], ts) is None:
            raise SlackError("message_not_found")
        pins = self._pins.setdefault(channel["id"], [])
        if any(p["ts"] == ts for p in pins):
            raise SlackError("already_pinned")
        pins.append({"ts": ts, "created": int(time.time()), "created_by": self.bot_user_id})
        return {}

    def _pins_list(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        items = []
        for pin in reversed(self._pins.get(channel["id"], [])):
            message = self._find_message(channel["id"], pin["ts"])
            if message is not None:
                items.append({"type": "message", "created": pin["created"],
                              "created_by": pin["created_by"], "channel": channel["id"],
                              "message": self._render_message(channel["id"], message)})
        return {"items": items}

    def _pins_remove(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel"))
        ts = _s(args, "timestamp")
        if not ts:
            raise SlackError("no_item_specified")
        pins = self._pins.get(channel["id"], [])
        if not any(p["ts"] == ts for p in pins):
            raise SlackError("no_pin")
        self._pins[channel["id"]] = [p for p in pins if p["ts"] != ts]
        return {}

    def _bookmarks_add(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel_id"))
        kind, title, link = _s(args, "type"), _s(args, "title"), _s(args, "link")
        if kind != "link":
            raise SlackError("invalid_bookmark_type")
        if not title or not link.startswith(("http://", "https://")):
            raise SlackError("invalid_arguments")
        now = int(time.time())
        bookmark = {
            "id": self._new_id("Bk"), "channel_id": channel["id"], "title": title,
            "link": link, "emoji": _s(args, "emoji") or None, "icon_url": None, "type": "link",
            "entity_id": _s(args, "entity_id") or None, "date_created": now,
            "date_updated": 0, "rank": "U", "last_updated_by_user_id": self.bot_user_id,
            "last_updated_by_team_id": self.team_id, "shortcut_id": None, "app_id": None,
        }
        self._bookmarks.setdefault(channel["id"], []).append(bookmark)
        return {"bookmark": copy.deepcopy(bookmark)}

    def _bookmarks_list(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel_id"))
        return {"bookmarks": copy.deepcopy(self._bookmarks.get(channel["id"], []))}

    def _bookmarks_remove(self, args: JSON) -> JSON:
        channel = self._visible(_s(args, "channel_id"))
        bookmarks = self._bookmarks.get(channel["id"], [])
        wanted = _s(args, "bookmark_id")
        if not any(b["id"] == wanted for b in bookmarks):
            raise SlackError("not_found")
        self._bookmarks[channel["id"]] = [b for b in bookmarks if b["id"] != wanted]
        return {}

    def _views_open(self, args: JSON) -> JSON:
        trigger = _s(args, "trigger_id") or _s(args, "interactivity_pointer")
        self._check_trigger(trigger)
        view = self._view_arg(args, "modal")
        self._triggers[trigger]["used"] = True
        return {"view": copy.deepcopy(self._store_view(view))}

    def _views_push(self, args: JSON) -> JSON:
        trigger = _s(args, "trigger_id") or _s(args, "interactivity_pointer")
        self._check_trigger(trigger)
        view = self._view_arg(args, "modal")
        previous = self._view_order[-1] if self._view_order else None
        depth, cursor = 0, previous
        while cursor is not None:
            depth += 1
            cursor = self._views[cursor]["previous_view_id"]
        if depth >= 3:
            raise SlackError("push_limit_reached")
        self._triggers[trigger]["used"] = True
        root = self._views[previous]["root_view_id"] if previous else None
        stored = self._store_view(view, previous_view_id=previous, root_view_id=root)
        return {"view": copy.deepcopy(stored)}

    def _views_update(self, args: JSON) -> JSON:
        view_id, external_id = _s(args, "view_id"), _s(args, "external_id")
        if not view_id and not external_id:
            raise SlackError("invalid_arguments", response_metadata={
                "messages": ["[ERROR] either view_id or external_id is required"]})
        current = self._views.get(view_id) if view_id else next(
            (v for v in self._views.values() if v["external_id"] == external_id), None)
        if current is None:
            raise SlackError("not_found")
        expected = _s(args, "hash")
        if expected and expected != current["hash"]:
            raise SlackError("hash_conflict")
        try:
            view = _json_arg(args.get("view"))
        except ValueError:
            view = None
        problems = view_errors(view, current["type"])
        if problems:
            raise SlackError("invalid_arguments", response_metadata={"messages": problems})
        assert isinstance(view, dict)
        stored = self._store_view(view, view_id=current["id"],
                                  previous_view_id=current["previous_view_id"],
                                  root_view_id=current["root_view_id"])
        return {"view": copy.deepcopy(stored)}

    def _views_publish(self, args: JSON) -> JSON:
        user_id = _s(args, "user_id")
        if user_id not in self._users:
            raise SlackError("user_not_found")
        view = self._view_arg(args, "home")
        current = self._home_views.get(user_id)
        expected = _s(args, "hash")
        if current is not None and expected and expected != current["hash"]:
            raise SlackError("hash_conflict")
        view_id = current["id"] if current else self._new_id("V")
        stored = {**copy.deepcopy(view), "id": view_id, "team_id": self.team_id,
                  "state": {"values": {}}, "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
                  "app_id": self.app_id, "bot_id": self.bot_id}
        self._home_views[user_id] = stored
        return {"view": copy.deepcopy(stored)}

    def _users_info(self, args: JSON) -> JSON:
        user = self._users.get(_s(args, "user"))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": self._render_user(user)}

    def _users_list(self, args: JSON) -> JSON:
        return {"members": [self._render_user(u) for u in self._users.values()],
                "cache_ts": int(time.time()), "response_metadata": {"next_cursor": ""}}

    def _users_conversations(self, args: JSON) -> JSON:
        user = _s(args, "user") or self.bot_user_id
        if user not in self._users:
            raise SlackError("user_not_found")
        listed = self._conversations_list(args)["channels"]
        mine = [c for c in listed if user in self._channels[c["id"]]["members"]]
        return {"channels": mine, "response_metadata": {"next_cursor": ""}}

    def _files_get_upload_url_external(self, args: JSON) -> JSON:
        filename = _s(args, "filename")
        try:
            length = int(_s(args, "length"))
        except ValueError:
            length = -1
        if not filename or length < 0:
            raise SlackError("invalid_arguments")
        file_id = self._new_id("F")
        self._files[file_id] = {
            "id": file_id, "name": filename, "title": filename, "length": length,
            "content": None, "channels": [], "user": self.bot_user_id,
            "created": int(time.time()), "alt_txt": _s(args, "alt_txt") or None,
            "snippet_type": _s(args, "snippet_type") or None, "completed": False,
        }
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload_external(self, args: JSON) -> JSON:
        try:
            items = _json_arg(args.get("files"))
        except ValueError:
            items = None
        if not isinstance(items, list) or not items or not all(
                isinstance(i, dict) and i.get("id") for i in items):
            raise SlackError("invalid_arguments")
        for item in items:
            record = self._files.get(str(item["id"]))
            if record is None or record["content"] is None or record["completed"]:
                raise SlackError("file_not_found")
        targets = [c for c in [_s(args, "channel_id"), *_s(args, "channels").split(",")] if c]
        channels = [self._writable(c) for c in dict.fromkeys(targets)]
        shared = []
        for item in items:
            record = self._files[str(item["id"])]
            record["title"] = str(item.get("title") or record["name"])
            record["completed"] = True
            shared.append({"id": record["id"], "title": record["title"]})
        ids = [str(item["id"]) for item in items]
        for channel in channels:
            self._store_message(channel, user=self.bot_user_id,
                                text=_s(args, "initial_comment"),
                                thread_ts=_s(args, "thread_ts") or None, files=ids)
            for file_id in ids:
                self._files[file_id]["channels"].append(channel["id"])
        return {"files": shared}
