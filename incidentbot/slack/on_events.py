"""Events API: channel messages, edits, deletions and :pushpin: reactions go into the
timeline before Slack gets its answer (idempotent on the message's ts, so Slack's retries
store nothing twice). If the database is down, Slack gets a 503 and delivers it again."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, BoltResponse
from sqlalchemy.exc import SQLAlchemyError

from incidentbot.services.timeline import TimelineService

log = logging.getLogger(__name__)

OTHER_EVENTS = ("reaction_added", "reaction_removed", "member_joined_channel")


class EventListener:
    def __init__(self, timeline: TimelineService) -> None:
        self.timeline = timeline

    def on_event(self, ack: Ack, event: dict[str, Any]) -> BoltResponse | None:
        try:
            self.timeline.capture(event)
        except SQLAlchemyError as exc:
            log.error("Timeline store unavailable; Slack will redeliver: %s",
                      type(exc).__name__)
            return BoltResponse(status=503, body="timeline store unavailable")
        ack()
        return None
