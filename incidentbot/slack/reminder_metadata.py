"""The claim of a reminder, carried in its Slack message's metadata.

Each due reminder is claimed with a unique key before it is posted
(`updates.claim_reminder`), and the claim is confirmed with the message's ts once Slack
answers. A leader that dies after Slack stored the message and before that confirmation
leaves a claim that looks unposted. So every reminder goes out with the metadata
`{"event_type": "incident_reminder", "event_payload": {"claim_key": ..., "incident_id": ...}}`,
and before posting an unconfirmed claim again, the next leader reads the channel's history
around the claim's time (conversations.history with include_all_metadata) for a message
carrying its key; one found confirms the claim instead.

Scopes: Slack lists only the channel's history scope for conversations.history
(`channels:history`, `groups:history`, both in the manifests), include_all_metadata
included; `metadata.message:read` is documented for the Events API's `message_metadata_*`
events, which the bot does not use.

Pure functions: building the metadata, the ts window to search, and finding the claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

EVENT_TYPE = "incident_reminder"  # letters, digits, `_` and `-` only, or Slack drops it
CLOCK_SKEW = timedelta(minutes=1)  # how far Slack's clock may be behind ours
# From the claim to Slack storing the post: the post follows the claim at once, but
# slack_sdk retries a rate-limited, failed or cut-off call several times (`retry_handlers`).
POST_WINDOW = timedelta(minutes=10)


def reminder_metadata(claim_key: str, incident_id: int) -> dict[str, Any]:
    """The metadata of the reminder message posted for this claim."""
    return {"event_type": EVENT_TYPE,
            "event_payload": {"claim_key": claim_key, "incident_id": incident_id}}


def slack_ts(at: datetime) -> str:
    """A time as Slack writes a message's ts ("1700000000.000100")."""
    return f"{at.timestamp():.6f}"


def search_window(claimed_at: datetime) -> tuple[str, str]:
    """(oldest, latest) ts between which a reminder claimed at `claimed_at` was posted,
    if it was."""
    return slack_ts(claimed_at - CLOCK_SKEW), slack_ts(claimed_at + POST_WINDOW)


def carries_claim(message: Mapping[str, Any], claim_key: str, incident_id: int) -> bool:
    """Whether a message (as conversations.history returns it, with its metadata) is the
    reminder posted for this claim."""
    metadata = message.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != EVENT_TYPE:
        return False
    payload = metadata.get("event_payload")
    return isinstance(payload, Mapping) and payload.get("claim_key") == claim_key \
        and payload.get("incident_id") == incident_id


def find_claimed(messages: Iterable[Mapping[str, Any]], claim_key: str,
                 incident_id: int) -> str | None:
    """The ts of the first message that is the reminder of this claim, None if none is;
    `messages` is read only as far as that message."""
    return next((str(m["ts"]) for m in messages if carries_claim(m, claim_key, incident_id)),
                None)
