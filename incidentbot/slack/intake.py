"""The door of `POST /slack/events`: raw bytes and headers in, a BoltRequest or a Refusal out.

    result = admit(raw_body, headers, settings.slack_signing_secret)
    if isinstance(result, Refusal):  # 413, 401 or 400, already logged (one line)
        answer result.status with result.reason as text/plain
    else:
        answer with app.dispatch(result)

Checked in order: size (413), signature and timestamp on the raw bytes (401, whatever the body),
`parse` (a form is interactivity only if it has a `payload` field), `validate` (400 naming the
field; Slack retries an event 3 times at most). Unknown types, extra fields, ssl_check pass.
`bolt_request` also rebuilds stored (job) and Socket Mode requests, headers passed through.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import NoneType
from typing import Annotated, Any, get_args
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from slack_bolt import BoltContext, BoltRequest
from slack_bolt.request.internals import build_context
from slack_sdk.signature import Clock, SignatureVerifier

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_AGE_S = 60 * 5  # SignatureVerifier's window, checked first only to name the reason
Headers = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class Refusal:
    """An answer to give instead of dispatching: 400 (malformed), 401 (unsigned), 413."""

    status: int
    reason: str


class Malformed(ValueError):
    """A signed request the bot cannot read; `reason`, its message, names what is wrong."""

    @property
    def reason(self) -> str:
        return str(self)


class _At(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


class _RawVerifier(SignatureVerifier):
    """slack_sdk decodes the body as UTF-8 before hashing, which raises on other bytes; Slack
    signs bytes, so those are hashed as they are (and then refused by `parse` if signed)."""

    def generate_signature(self, *, timestamp: str, body: str | bytes) -> str | None:
        try:
            return super().generate_signature(timestamp=timestamp, body=body)
        except UnicodeDecodeError:
            base = b"v0:%b:%b" % (timestamp.encode(), body)
            return "v0=" + hmac.new(self.signing_secret.encode(), base, hashlib.sha256).hexdigest()


def header(headers: Headers, name: str) -> str | None:
    """A header's first value, whatever the case of its name."""
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value if isinstance(value, str) else next(iter(value), None)
    return None


def verify(raw: bytes, headers: Headers, signing_secret: str,
           now: float | None = None) -> Refusal | None:
    """None if `raw` is under the size limit and signed with `signing_secret` less than 5
    minutes from `now` (default: the clock), else the Refusal (413 or 401)."""
    if len(raw) > MAX_BODY_BYTES:
        return Refusal(413, "body over 1 MiB")
    timestamp = header(headers, "x-slack-request-timestamp")
    signature = header(headers, "x-slack-signature")
    if not timestamp or not signature:
        return Refusal(401, "unsigned request")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) < 16
            and signature.isascii()):  # int() and compare_digest() would raise
        return Refusal(401, "malformed signature headers")
    verifier = _RawVerifier(signing_secret, Clock() if now is None else _At(now))
    if abs(verifier.clock.now() - int(timestamp)) > MAX_AGE_S:
        return Refusal(401, "stale timestamp")
    if not verifier.is_valid(raw, timestamp, signature):
        return Refusal(401, "bad signature")
    return None


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise Malformed(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not a JSON object")
    return value


def parse(raw: bytes | str, content_type: str) -> dict[str, Any]:
    """The body as a dict: JSON if the content type says so or it starts with `{`, else a
    form, which is an interactivity payload only if it has a `payload` field."""
    try:
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("body is not UTF-8") from None
    if not text:
        raise Malformed("body is empty")
    if content_type.split(";")[0].strip().lower() == "application/json" or text.startswith("{"):
        return _json_object(text, "body")
    fields = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in fields:
        return _json_object(fields["payload"], "payload")
    return fields


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # Slack adds fields; no coercion


def _shape(name: str, base: type[_Shape] = _Shape, **fields: Any) -> type[_Shape]:
    """A model of `field=type`, required unless the type admits None (then it may be absent)."""
    return create_model(name, __base__=base, **{  # type: ignore[call-overload]
        key: (kind, None if NoneType in get_args(kind) else ...) for key, kind in fields.items()})


_Object = dict[str, Any]
_Id = _shape("Id", id=str)
_Command = _shape("Command", command=str, text=str, user_id=str, channel_id=str,
                  trigger_id=str, response_url=str)
_Action = _shape("Action", action_id=str, value=str | None, selected_option=_Object | None)
_View = _shape("View", id=str, callback_id=str, private_metadata=str,
               state=_shape("State", values=dict[str, _Object]))
_Message = _shape("Message", ts=str | None, user=str | None, text=str | None,
                  subtype=str | None, thread_ts=str | None, edited=_Object | None)
_PAYLOADS: dict[str, type[_Shape]] = {
    "block_actions": _shape("BlockActions", user=_Id, trigger_id=str, channel=_Id | None,
                            actions=Annotated[list[_Action], Field(min_length=1)]),
    "view_submission": _shape("ViewSubmission", user=_Id, view=_View),
    "view_closed": _shape("ViewClosed", user=_Id, view=_View),
    "shortcut": _shape("Shortcut", user=_Id, callback_id=str, trigger_id=str),
    "message_action": _shape("MessageAction", user=_Id, callback_id=str, trigger_id=str),
    "event_callback": _shape("EventCallback", event=_shape("Event", type=str),
                             authorizations=list[_Object] | None),
    "url_verification": _shape("UrlVerification", challenge=str)}
_Reaction = _shape("Reaction", reaction=str, item=_shape(  # a file's item has no channel, ts
    "Item", type=str, channel=str | None, ts=str | None))
_EVENTS: dict[str, type[_Shape]] = {
    "message": _shape("MessageEvent", _Message, channel=str, ts=str,
                      message=_Message | None, previous_message=_Message | None),
    "reaction_added": _Reaction, "reaction_removed": _Reaction,
    "member_joined_channel": _shape("MemberJoined", user=str, channel=str)}
_MessageItem = _shape("MessageItem", type=str, channel=str, ts=str)
_PHRASES = {"missing": "is missing", "string_type": "must be a string",
            "list_type": "must be a list", "too_short": "must not be empty",
            "model_type": "must be an object", "dict_type": "must be an object"}


def _check(shape: type[_Shape], data: object, prefix: str = "") -> None:
    try:
        shape.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                       for part in error["loc"])
        where = (prefix + path).strip(".") or "body"
        raise Malformed(f"{where} {_PHRASES.get(error['type'], error['msg'])}") from None


def validate(body: dict[str, Any]) -> None:
    """Raise Malformed naming the first field of a wrong type among those the bot reads."""
    kind = body.get("type")
    if kind is None:
        if "command" in body:
            _check(_Command, body)
        elif "ssl_check" not in body:
            raise Malformed("body is neither a command, an interaction nor an event")
        return
    if not isinstance(kind, str):
        raise Malformed("type must be a string")
    if kind in _PAYLOADS:
        _check(_PAYLOADS[kind], body)
    if kind == "event_callback" and (event := body["event"])["type"] in _EVENTS:
        _check(_EVENTS[event["type"]], event, "event")
        if event["type"].startswith("reaction_") and event["item"]["type"] == "message":
            _check(_MessageItem, event["item"], "event.item")


class IntakeRequest(BoltRequest):
    """A BoltRequest whose body is `parse`'s, also in the copies made for lazy listeners
    (Bolt's own `to_copyable` parses `raw_body` again, with its `payload` bug)."""

    def to_copyable(self) -> BoltRequest:
        copied = self.context.to_copyable()
        return _assemble(self.raw_body, self.body, self.headers, self.mode, copied)


def _assemble(raw: str, body: dict[str, Any], headers: Headers, mode: str,
              context: dict[str, Any] | None) -> IntakeRequest:
    listed = {k: [v] if isinstance(v, str) else list(v) for k, v in headers.items()}
    request = IntakeRequest(body="" if mode == "http" else {}, headers=listed, mode=mode)
    request.raw_body, request.body = raw, body
    try:
        request.context = build_context(BoltContext(context or {}), body)
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
        raise Malformed(f"Bolt cannot read the body ({type(exc).__name__})") from None
    return request


def bolt_request(raw: str | dict[str, Any], content_type: str, headers: Headers,
                 mode: str = "http", *, context: dict[str, Any] | None = None) -> BoltRequest:
    """A BoltRequest with `parse`'s body (raises Malformed). `raw` is the body text (or, for
    Socket Mode, the payload dict); `headers` pass through (Content-Type added if missing)."""
    if content_type and header(headers, "content-type") is None:
        headers = {**headers, "content-type": content_type}
    if isinstance(raw, dict):
        if mode == "http":
            raise ValueError("HTTP mode needs the raw body text (Bolt verifies it)")
        return _assemble("", raw, headers, mode, context)
    return _assemble(raw, parse(raw, content_type), headers, mode, context)


def admit(raw: bytes, headers: Headers, signing_secret: str,
          now: float | None = None) -> BoltRequest | Refusal:
    """verify → parse → validate → BoltRequest; a Refusal is logged (one line) and returned."""
    refusal = verify(raw, headers, signing_secret, now)
    if refusal is None:
        try:
            body = parse(raw, header(headers, "content-type") or "")
            validate(body)
            return _assemble(raw.decode("utf-8"), body, headers, "http", None)
        except Malformed as exc:
            refusal = Refusal(400, exc.reason)
    log.warning("Refused a Slack request: %d %s", refusal.status, refusal.reason)
    return refusal
