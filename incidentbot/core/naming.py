"""Incident channel names: `<prefix>-YYYYMMDD-<slug>` within Slack's channel-name rules."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

MAX_CHANNEL_NAME = 80
_SUFFIX_ROOM = 4  # room for "-NN" collision suffixes
_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")


def slugify(title: str, max_length: int = 40) -> str:
    """Lowercase ASCII words joined by '-', cut at a word boundary; 'incident' if empty."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = _NOT_ALLOWED.sub("-", ascii_text.lower()).strip("-")
    if len(slug) > max_length:
        cut = slug[:max_length]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else cut
    return slug.strip("-") or "incident"


def channel_name(prefix: str, declared_at: datetime, title: str) -> str:
    """The base channel name for an incident, leaving room for a collision suffix."""
    head = f"{prefix}-{declared_at:%Y%m%d}-"
    room = MAX_CHANNEL_NAME - len(head) - _SUFFIX_ROOM
    return head + slugify(title, max_length=min(40, room))


def with_suffix(base: str, attempt: int) -> str:
    """`base` for the first attempt, then `base-2`, `base-3`, ... (kept within 80 chars)."""
    if attempt <= 1:
        return base
    suffix = f"-{attempt}"
    return base[: MAX_CHANNEL_NAME - len(suffix)] + suffix
