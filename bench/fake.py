"""The fake Slack of the tests, run in its own process, with a small control API for the bench.

`python -m bench.fake` prints `PORT <n>` once listening on 127.0.0.1. Besides Slack's Web API
(tests/fakeslack.py) it answers, on the same port:

- `POST /bench/users`    {"users": [[id, name], ...]}
- `POST /bench/channels` {"prefix": str, "count": n, "members": [...]} -> [{"id", "card_ts"}]
  (channels with the bot as member and a bot-authored card message)
- `POST /bench/mint`     {"triggers": n, "response_urls": n, "user": id} -> ids and URLs
- `POST /bench/watch`    {"channels": [...]}: record when each first gets a chat.postMessage
- `GET  /bench/watch`    -> {"posted": {channel: unix time}}
- `GET  /bench/stats`    -> {"calls": n, "by_method": {...}}
- `POST /bench/opened`   {"triggers": [...]} -> {"opened": {trigger: unix time}}: when
  `views.open` with each trigger succeeded (the modal appeared)
- `POST /bench/forget`   drop the call log and messages (memory), keep channels and users
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from typing import Any

from tests.fakeslack import JSON, FakeSlack, _Handler

BOT_TOKEN = "xoxb-bench-token"
LONG_TTL_S = 24 * 3600.0  # triggers minted ahead of a load phase stay valid


class BenchFakeSlack(FakeSlack):
    """FakeSlack plus bulk seeding, pre-minted triggers and post-time recording."""

    def __init__(self) -> None:
        super().__init__(bot_token=BOT_TOKEN)
        self.trigger_ttl_s = LONG_TTL_S
        self.response_url_max_uses = 1_000
        self._count_lock = threading.Lock()
        self._call_count = 0
        self._by_method: collections.Counter[str] = collections.Counter()
        self._watched: dict[str, float | None] = {}
        self._opened: dict[str, float] = {}

    # -- hooks into the fake ---------------------------------------------------------------

    def _serve_api(self, req: _Handler, method: str, query: str, body: bytes) -> None:
        with self._count_lock:
            self._call_count += 1
            self._by_method[method] += 1
        super()._serve_api(req, method, query, body)
        with self._lock:  # the test fake keeps every call; a bench would grow without bound
            if len(self._calls) > 1000:
                del self._calls[:-100]

    def _chat_post_message(self, args: JSON) -> JSON:
        channel = str(args.get("channel") or "")
        if channel in self._watched and self._watched[channel] is None:
            self._watched[channel] = time.time()
        return super()._chat_post_message(args)

    def _views_open(self, args: JSON) -> JSON:
        answer = super()._views_open(args)
        with self._lock:
            self._opened[str(args.get("trigger_id"))] = time.time()
        return answer

    def _handle(self, req: _Handler) -> None:
        if not req.path.startswith("/bench/"):
            super()._handle(req)
            return
        length = int(req.headers.get("Content-Length") or 0)
        body = json.loads(req.rfile.read(length) or b"{}") if length else {}
        try:
            answer = self._control(req.command, req.path.removeprefix("/bench/"), body)
        except (KeyError, ValueError, TypeError) as exc:
            self._reply_json(req, {"ok": False, "error": repr(exc)}, 400)
            return
        self._reply_json(req, {"ok": True, **answer})

    # -- control API -----------------------------------------------------------------------

    def _control(self, verb: str, path: str, body: dict[str, Any]) -> JSON:
        if path == "users":
            for user_id, name in body["users"]:
                self.add_user(str(user_id), str(name))
            return {}
        if path == "channels":
            return {"channels": self._seed_channels(str(body["prefix"]), int(body["count"]),
                                                    [str(m) for m in body.get("members", [])])}
        if path == "mint":
            user = body.get("user")
            triggers = [self.mint_trigger_id(user) for _ in range(int(body.get("triggers", 0)))]
            urls = [self.new_response_url(user_id=user)
                    for _ in range(int(body.get("response_urls", 0)))]
            return {"triggers": triggers, "response_urls": urls}
        if path == "watch" and verb == "POST":
            with self._lock:
                self._watched = {str(c): None for c in body.get("channels", [])}
            return {}
        if path == "watch":
            with self._lock:
                return {"posted": {c: t for c, t in self._watched.items() if t is not None}}
        if path == "opened":
            with self._lock:
                return {"opened": {t: self._opened[t] for t in body.get("triggers", [])
                                   if t in self._opened}}
        if path == "stats":
            with self._count_lock:
                return {"calls": self._call_count, "by_method": dict(self._by_method)}
        if path == "forget":
            with self._lock:
                self._calls.clear()
                for messages in self._messages.values():
                    del messages[1:]  # keep each channel's first message (the card)
                self._ephemerals.clear()
                self._responses.clear()
                self._views.clear()
                self._view_order.clear()
            return {}
        raise KeyError(path)

    def _seed_channels(self, prefix: str, count: int, members: list[str]) -> list[JSON]:
        """Channels (bot and `members` in them), each with a bot-authored card message.

        Bypasses `add_channel`'s name scan, which is quadratic for thousands of channels.
        """
        out = []
        with self._lock:
            for i in range(count):
                channel = self._new_channel(f"{prefix}-{i}", creator=self.bot_user_id,
                                            members=[self.bot_user_id, *members],
                                            is_private=False)
                card = self._store_message(channel, user=self.bot_user_id, text="card")
                out.append({"id": channel["id"], "card_ts": card["ts"]})
        return out


def main() -> int:
    fake = BenchFakeSlack()
    fake.start()
    assert fake._server is not None
    print(f"PORT {fake._server.server_address[1]}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
