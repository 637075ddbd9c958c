"""Small helpers for end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
