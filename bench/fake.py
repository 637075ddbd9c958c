"""The tests' fake Slack (tests/fakeslack.py) in its own process, noting what the bench reads.

`python -m bench.fake` prints `PORT <n>`. Triggers live Slack's 3 s; the load generator mints
its own (`bench.<unix time>.<n>`, minted at that time) and response URLs (`/response/bench<n>`).
Control API (`_control`): `/bench/latency`, `/bench/channels` (to seed incidents into a
database), `/bench/calls`, `/bench/state` (per channel, when the bot created it, invited each
user, set the topic, posted and pinned the card, broadcast it, posted each reminder; each
trigger's `views.open`; setTopic calls, and those changing nothing), `/bench/reset`.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from typing import Any

from tests.fakeslack import JSON, FakeSlack, SlackError, _Handler, _Server

BOT_TOKEN = "xoxb-bench-token"
GENERAL, BROADCAST, USER = "CGENERAL", "CBROADCAST", "UBENCH"
CLICKERS = [f"UCLICK{i:02d}" for i in range(1, 21)]


def buttons(blocks: Any) -> dict[str, str]:
    """{action_id: value} of the buttons in a `blocks` argument (JSON text or a list)."""
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return {str(e["action_id"]): str(e.get("value", "")) for block in blocks or []
            for e in block.get("elements") or [] if e.get("action_id")}


class BenchFakeSlack(FakeSlack):
    def __init__(self) -> None:
        super().__init__(bot_token=BOT_TOKEN)
        self._local = threading.local()
        for user in (USER, *CLICKERS):
            self.add_user(user, user.lower())
        for channel_id, name in ((GENERAL, "general"), (BROADCAST, "incidents")):
            self._new_channel(name, creator=USER, members=[self.bot_user_id, USER],
                              is_private=False, channel_id=channel_id)
        self._forget()

    def _forget(self) -> None:
        self.calls_total = self.topic_calls = self.topic_noops = 0
        self.meta: dict[str, JSON] = {}
        self.opened: dict[str, float] = {}
        self.refused: dict[str, str] = {}

    def _meta(self, channel: str) -> JSON:
        return self.meta.setdefault(channel, {"invited": {}, "reminders": []})

    # -- hooks (the Web API handlers run with self._lock held) -----------------------------

    def _serve_api(self, req: _Handler, method: str, query: str, body: bytes) -> None:
        self._local.arrived = time.time()
        with self._lock:
            self.calls_total += 1
            if len(self._calls) > 2000:  # the tests' fake keeps every call
                del self._calls[:-100]
        super()._serve_api(req, method, query, body)

    def _check_trigger(self, trigger_id: str) -> None:
        if trigger_id.startswith("bench.") and trigger_id not in self._triggers:
            age = time.time() - float(".".join(trigger_id.split(".")[1:3]))
            self._triggers[trigger_id] = {"minted": self.clock() - age, "used": False}
        super()._check_trigger(trigger_id)

    def _serve_response_url(self, req: _Handler, url_id: str, body: bytes) -> None:
        with self._lock:
            if url_id.startswith("bench"):
                self._response_urls.setdefault(url_id, {"created": self.clock(), "uses": 0})
        super()._serve_response_url(req, url_id, body)

    def _views_open(self, args: JSON) -> JSON:
        trigger = str(args.get("trigger_id") or "")
        try:
            answer = super()._views_open(args)
        except SlackError as exc:
            self.refused[trigger] = exc.error
            raise
        self.opened[trigger] = time.time()
        return answer

    def _conversations_create(self, args: JSON) -> JSON:
        answer = super()._conversations_create(args)
        self._meta(answer["channel"]["id"]).update(
            name=answer["channel"]["name"], asked=self._local.arrived, created=time.time())
        return answer

    def _conversations_invite(self, args: JSON) -> JSON:
        answer = super()._conversations_invite(args)
        for user in str(args.get("users", "")).split(","):
            self._meta(str(args.get("channel")))["invited"].setdefault(user.strip(), time.time())
        return answer

    def _conversations_set_topic(self, args: JSON) -> JSON:
        channel = self._channels.get(str(args.get("channel")), {})
        self.topic_calls += 1
        self.topic_noops += channel.get("topic") == args.get("topic")
        answer = super()._conversations_set_topic(args)
        self._meta(channel["id"]).setdefault("topic_at", time.time())
        return answer

    def _pins_add(self, args: JSON) -> JSON:
        answer = super()._pins_add(args)
        self._meta(str(args.get("channel"))).setdefault("pinned_at", time.time())
        return answer

    def _chat_post_message(self, args: JSON) -> JSON:
        answer = super()._chat_post_message(args)
        now, meta, found = time.time(), self._meta(answer["channel"]), buttons(args.get("blocks"))
        if "card_post_update" in found and "card_ts" not in meta:
            meta.update(card_ts=answer["ts"], card_at=now, incident=found["card_post_update"])
        if "reminder_post_update" in found:
            meta["reminders"].append([self._local.arrived, now])
        if answer["channel"] == BROADCAST:
            for linked in re.findall(r"<#(C\w+)", str(args.get("text", ""))):
                self._meta(linked).setdefault("broadcast_at", now)
        return answer

    # -- control API ------------------------------------------------------------------------

    def _handle(self, req: _Handler) -> None:
        if not req.path.startswith("/bench/"):
            return super()._handle(req)
        length = int(req.headers.get("Content-Length") or 0)
        body = json.loads(req.rfile.read(length)) if length else {}
        with self._lock:  # serialized while no handler can change it
            answer = json.dumps(self._control(req.path.removeprefix("/bench/"), body))
        self._reply(req, 200, answer.encode())

    def _control(self, path: str, body: dict[str, Any]) -> JSON:
        if path == "latency":
            self._latency = {None: float(body["seconds"])}
        elif path == "channels":
            made = [self._new_channel(f"{body['prefix']}-{i}", creator=self.bot_user_id,
                                      members=[self.bot_user_id, USER], is_private=False)
                    for i in range(int(body["count"]))]
            return {"channels": [{"id": c["id"], "card_ts": self._store_message(
                c, user=self.bot_user_id, text="card")["ts"]} for c in made]}
        elif path == "reset":
            self._forget()
        elif path == "calls":
            return {"calls": self.calls_total}
        elif path == "state":
            return {"channels": self.meta, "opened": self.opened, "refused": self.refused,
                    "topic_calls": self.topic_calls, "topic_noops": self.topic_noops}
        return {}


if __name__ == "__main__":
    _Server.request_queue_size = 256  # socketserver's backlog of 5 drops connections in bursts
    print(f"PORT {BenchFakeSlack().start().base_url.rsplit(':', 1)[1]}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sys.exit(0)
