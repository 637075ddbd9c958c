"""The one module that calls Slack's Web API (and response URLs).

Rate limits (429 + Retry-After), server errors and connection resets are retried by
slack_sdk's retry handlers; what is left surfaces as `SlackCallFailed` with Slack's error code.
"""

from __future__ import annotations

import http.client
import io
import logging
import select
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from incidentbot.core.naming import with_suffix
from incidentbot.telemetry import Telemetry

log = logging.getLogger(__name__)

TOPIC_MAX = 250  # Slack's limit on a channel topic

MAX_NAME_ATTEMPTS = 50

# Errors that mean "already done": treated as success so retries stay idempotent.
_ALREADY_DONE = {
    "conversations.invite": {"already_in_channel", "cant_invite_self"},
    "pins.add": {"already_pinned"},
    "conversations.archive": {"already_archived"},
}


def retry_handlers() -> list[RetryHandler]:
    """Connection resets, 429s (honouring Retry-After) and 5xx answers are retried."""
    return [
        ConnectionErrorRetryHandler(max_retry_count=3),
        RateLimitErrorRetryHandler(max_retry_count=5),
        ServerErrorRetryHandler(max_retry_count=3),
    ]


def build_client(token: str, base_url: str, timeout: int = 10) -> WebClient:
    client = KeepAliveWebClient(token=token, base_url=base_url, timeout=timeout)
    client.retry_handlers = retry_handlers()
    return client


class KeepAliveWebClient(WebClient):
    """slack_sdk's `WebClient`, with each thread keeping its connection to Slack open.

    The stock client sends every call through `urlopen`, on a new connection: a TCP and TLS
    handshake before each of the ten or so calls a declaration makes in a row. Here a call
    goes over the calling thread's open connection (HTTP/1.1 keep-alive); one the server has
    closed meanwhile is noticed before use and replaced. Requests, answers and errors are
    those of `urlopen` (`HTTPError` for an error status, `URLError` when sending fails), so
    slack_sdk's retry handlers behave as before. With a proxy, the stock path is used.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open = threading.local()

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        if self.proxy is not None or not url.lower().startswith("http"):
            return super()._perform_urllib_http_request_internal(url, req)
        connection = self._connection_for(url)
        try:
            connection.request(req.get_method(), req.selector, body=req.data,
                               headers=_request_headers(req))
        except OSError as exc:
            self._discard(connection)
            raise URLError(exc) from exc
        try:
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            self._discard(connection)
            raise
        if response.will_close:
            self._discard(connection)
        if not 200 <= response.status < 300:
            raise HTTPError(req.full_url, response.status, response.reason, response.msg,
                            io.BytesIO(body))
        if response.msg.get_content_type() != "application/gzip":
            body = body.decode(response.msg.get_content_charset() or "utf-8")
        return {"status": response.status, "headers": response.msg, "body": body}

    def _connection_for(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        key = (parts.scheme.lower(), parts.netloc)
        connection: http.client.HTTPConnection | None = getattr(self._open, "connection", None)
        if connection is not None and (self._open.key != key or _closed_by_peer(connection)):
            self._discard(connection)
            connection = None
        if connection is None:
            if key[0] == "https":
                connection = http.client.HTTPSConnection(parts.netloc, timeout=self.timeout,
                                                         context=self.ssl)
            else:
                connection = http.client.HTTPConnection(parts.netloc, timeout=self.timeout)
            self._open.connection, self._open.key = connection, key
        return connection

    def _discard(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        if getattr(self._open, "connection", None) is connection:
            self._open.connection = None


def _request_headers(req: Request) -> dict[str, str]:
    """The headers `urlopen` would send, less its `Connection: close`."""
    headers = {**req.headers, **req.unredirected_hdrs}
    if req.data is not None and "Content-type" not in headers:
        headers["Content-type"] = "application/x-www-form-urlencoded"
    return {name.title(): str(value) for name, value in headers.items()}


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection with something to read has been closed by the server
    (or holds bytes nobody asked for): either way it cannot carry the next request."""
    if connection.sock is None:
        return False  # not connected yet, or closed by us: `request` connects anew
    poller = select.poll()
    poller.register(connection.sock, select.POLLIN)
    return bool(poller.poll(0))


class SlackCallFailed(Exception):
    """A Web API call that failed after retries; `error` is Slack's error code."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"{method} failed: {error}")
        self.method = method
        self.error = error


@dataclass(frozen=True)
class CreatedChannel:
    id: str
    name: str


_RETRY_REASONS: dict[type[RetryHandler], str] = {
    RateLimitErrorRetryHandler: "ratelimited",  # HTTP 429, after its Retry-After
    ServerErrorRetryHandler: "server_error",
    ConnectionErrorRetryHandler: "connection_error",
}


class CountedRetry(RetryHandler):
    """One of slack_sdk's retry handlers, counting each retry it decides on."""

    def __init__(self, inner: RetryHandler, telemetry: Telemetry) -> None:
        super().__init__(inner.max_retry_count, inner.interval_calculator)
        self.inner = inner
        self.reason = _RETRY_REASONS.get(type(inner), type(inner).__name__)
        self.telemetry = telemetry

    def can_retry(self, **kwargs: Any) -> bool:
        return self.inner.can_retry(**kwargs)

    def prepare_for_next_attempt(self, **kwargs: Any) -> None:
        self.telemetry.slack_retry(kwargs["request"].url.rsplit("/", 1)[-1], self.reason)
        self.inner.prepare_for_next_attempt(**kwargs)


class SlackGateway:
    """Typed wrappers for the Web API calls the bot makes; each call and each retry is
    counted in `telemetry`."""

    def __init__(self, client: WebClient, telemetry: Telemetry | None = None) -> None:
        self.client = client
        self.telemetry = telemetry or Telemetry()
        client.retry_handlers = [CountedRetry(h, self.telemetry) for h in client.retry_handlers]

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            call = getattr(self.client, method.replace(".", "_"))
            response = call(**_drop_none(kwargs))
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            self.telemetry.slack_call(method, error)
            if error in _ALREADY_DONE.get(method, set()):
                return dict(exc.response.data) if isinstance(exc.response.data, dict) else {}
            log.warning("Slack %s failed: %s", method, error)
            raise SlackCallFailed(method, error) from None
        except (SlackClientError, OSError) as exc:
            self.telemetry.slack_call(method, "connection_error")
            log.warning("Slack %s unreachable: %s", method, type(exc).__name__)
            raise SlackCallFailed(method, "connection_error") from None
        self.telemetry.slack_call(method, "ok")
        return dict(response.data) if isinstance(response.data, dict) else {}

    def token_problem(self) -> str | None:
        """None when Slack takes the bot token, else one sentence on why not."""
        try:
            self._call("auth.test")
        except SlackCallFailed as exc:
            return token_problem(exc, self.client.base_url)
        return None

    def bot_user_id(self) -> str:
        """The bot's own user ID (auth.test), used to ignore its own messages."""
        return str(self._call("auth.test").get("user_id", ""))

    def create_channel(self, base_name: str, *, is_private: bool) -> CreatedChannel:
        """Create `base_name`, or `base_name-2`, `-3`, ... while Slack answers name_taken."""
        for attempt in range(1, MAX_NAME_ATTEMPTS + 1):
            name = with_suffix(base_name, attempt)
            try:
                data = self._call("conversations.create", name=name, is_private=is_private)
            except SlackCallFailed as exc:
                if exc.error == "name_taken":
                    continue
                raise
            channel = data["channel"]
            return CreatedChannel(id=channel["id"], name=channel["name"])
        raise SlackCallFailed("conversations.create", "name_taken")

    def invite(self, channel: str, users: Sequence[str]) -> None:
        self._call("conversations.invite", channel=channel, users=",".join(users))

    def invite_missing(self, channel: str, users: Sequence[str]) -> None:
        """Invite those of `users` who are not in the channel yet (Slack refuses the others
        with `already_in_channel`)."""
        missing = set(users) - self.members(channel)
        if missing:
            self.invite(channel, sorted(missing))

    def members(self, channel: str) -> set[str]:
        found: set[str] = set()
        cursor = None
        for _page in range(20):
            data = self._call("conversations.members", channel=channel, limit=1000,
                              cursor=cursor)
            found |= set(data.get("members") or [])
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return found

    def set_topic(self, channel: str, topic: str) -> bool:
        self._call("conversations.setTopic", channel=channel, topic=topic[:TOPIC_MAX])
        return True

    def post_message(
        self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None, metadata: dict[str, Any] | None = None,
    ) -> str:
        """Post and return the message's ts; rejoins a public channel it was removed from.
        `metadata`: Slack message metadata ({"event_type": ..., "event_payload": {...}}),
        read back with `history`."""
        def post() -> dict[str, Any]:
            return self._call("chat.postMessage", channel=channel, text=text, blocks=blocks,
                              thread_ts=thread_ts, metadata=metadata, unfurl_links=False)
        try:
            data = post()
        except SlackCallFailed as exc:
            if exc.error != "not_in_channel" or not channel.startswith("C"):
                raise
            self._call("conversations.join", channel=channel)
            data = post()
        return str(data["ts"])

    def history(self, channel: str, *, oldest: str, latest: str, page_size: int = 100,
                max_pages: int = 5) -> Iterator[dict[str, Any]]:
        """The channel's messages from `oldest` to `latest` (ts, both included), newest
        first, with their metadata (conversations.history with include_all_metadata).
        Pages are fetched as the caller reads on, `max_pages` at most; `SlackCallFailed`
        surfaces from the read that needed the page."""
        cursor: str | None = None
        for _page in range(max_pages):
            data = self._call("conversations.history", channel=channel, oldest=oldest,
                              latest=latest, inclusive=True, include_all_metadata=True,
                              limit=page_size, cursor=cursor)
            yield from data.get("messages") or []
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return

    def update_message(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        self._call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks)

    def pin(self, channel: str, ts: str) -> None:
        self._call("pins.add", channel=channel, timestamp=ts)

    def post_ephemeral(
        self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        self._call("chat.postEphemeral", channel=channel, user=user, text=text, blocks=blocks)

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        data = self._call("views.open", trigger_id=trigger_id, view=view)
        return str(data["view"]["id"])

    def update_view(self, view_id: str, view: dict[str, Any], view_hash: str | None) -> None:
        """Replace an open modal (the hash makes a stale update fail with hash_conflict)."""
        self._call("views.update", view_id=view_id, view=view, hash=view_hash)

    def user_info(self, user_id: str) -> dict[str, Any] | None:
        """The user's profile, or None when Slack does not know them."""
        try:
            data = self._call("users.info", user=user_id)
        except SlackCallFailed as exc:
            if exc.error in ("user_not_found", "users_not_found"):
                return None
            raise
        user = data.get("user")
        return user if isinstance(user, dict) else None

    def upload_file(
        self, channel: str, *, filename: str, content: str, title: str, comment: str
    ) -> str:
        """Upload a text file into a channel (files.getUploadURLExternal + complete)."""
        try:
            response = self.client.files_upload_v2(
                channel=channel, filename=filename, content=content, title=title,
                initial_comment=comment,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            self.telemetry.slack_call("files_upload_v2", error)
            log.warning("Slack file upload failed: %s", error)
            raise SlackCallFailed("files.completeUploadExternal", error) from None
        except (SlackClientError, OSError) as exc:
            self.telemetry.slack_call("files_upload_v2", "connection_error")
            log.warning("Slack file upload unreachable: %s", type(exc).__name__)
            raise SlackCallFailed("files.getUploadURLExternal", "connection_error") from None
        self.telemetry.slack_call("files_upload_v2", "ok")
        files = response.get("files") or [response.get("file") or {}]
        return str(files[0].get("id", ""))

    def usergroup_members(self, group_id: str) -> set[str]:
        """Members of a user group (empty when it cannot be read)."""
        try:
            data = self._call("usergroups.users.list", usergroup=group_id)
        except SlackCallFailed:
            return set()
        return set(data.get("users") or [])

    def private_channels_of(self, user_id: str) -> set[str]:
        """IDs of the private channels a user is in (paginated)."""
        channels: set[str] = set()
        cursor = None
        for _page in range(50):
            data = self._call("users.conversations", user=user_id, types="private_channel",
                              limit=200, cursor=cursor, exclude_archived=False)
            channels |= {c["id"] for c in data.get("channels") or []}
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return channels

    def add_bookmark(self, channel: str, title: str, link: str) -> None:
        self._call("bookmarks.add", channel_id=channel, title=title[:100], type="link", link=link)

    def archive_channel(self, channel: str) -> None:
        self._call("conversations.archive", channel=channel)

    def respond(
        self, response_url: str, text: str, blocks: list[dict[str, Any]] | None = None,
        *, ephemeral: bool = True,
    ) -> bool:
        """Answer through a slash command's response_url; False if Slack refused it."""
        webhook = WebhookClient(response_url, timeout=10, retry_handlers=retry_handlers())
        try:
            response = webhook.send(
                text=text, blocks=blocks,
                response_type="ephemeral" if ephemeral else "in_channel",
            )
        except (SlackClientError, OSError) as exc:
            log.warning("response_url unreachable: %s", type(exc).__name__)
            return False
        if response.status_code != 200:
            log.warning("response_url answered %s", response.status_code)
        return response.status_code == 200


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def token_problem(exc: SlackCallFailed, api_url: str = "") -> str:
    """One sentence on why Slack did not take the bot token (`auth.test`)."""
    if exc.error == "connection_error":
        return (f"Slack could not be reached at SLACK_API_URL ({api_url or 'its default'}); "
                "check the URL and this machine's network.")
    return (f"Slack refused the bot token ({exc.error}); check SLACK_BOT_TOKEN (the xoxb- token "
            "from your app's OAuth & Permissions page).")


def check_app_token(app_token: str, api_url: str) -> str | None:
    """None when Slack opens a Socket Mode connection for the app-level token, else why not."""
    client = WebClient(token=app_token, base_url=api_url, timeout=10)
    client.retry_handlers = retry_handlers()
    try:
        client.apps_connections_open()
    except SlackApiError as exc:
        return (f"Slack refused the app-level token ({exc.response.get('error')}); check "
                "SLACK_APP_TOKEN (an xapp- token with connections:write).")
    except (SlackClientError, OSError):
        return f"Slack could not be reached at SLACK_API_URL ({api_url})."
    return None
