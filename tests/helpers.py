"""Small helpers for end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tests.driver import SlackDriver

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll `check` until it returns a truthy value (or stops raising AssertionError)."""
    deadline = time.monotonic() + timeout
    last_error: AssertionError | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except AssertionError as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    if last_error is not None:
        raise last_error
    raise AssertionError(f"condition not met within {timeout}s: {check}")


def declared_channel(driver: SlackDriver, title: str, user_id: str) -> str:
    """Declare an incident from #general and return its channel once its card is pinned."""
    driver.command(f"declare {title}", user_id=user_id, channel_id="CGENERAL")
    slug = "-".join(title.lower().split())
    channel = eventually(lambda: next(
        (c["id"] for c in driver.fake.channels() if c["name"].endswith(slug)), None))
    eventually(lambda: driver.fake.pins(channel))
    return channel
