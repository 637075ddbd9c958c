"""Reading modal submissions: the values of a view's inputs, and the status-update form's
checks. Pure functions over the payload, safe with whatever types a payload claims."""

from __future__ import annotations

import json
from typing import Any

from incidentbot.core.status import Status
from incidentbot.core.updates import MAX_NEXT_UPDATE_MINUTES
from incidentbot.slack import blocks


def read_metadata(view: dict[str, Any]) -> dict[str, Any]:
    raw = view.get("private_metadata")
    if not isinstance(raw, str | bytes):
        return {}
    try:
        metadata = json.loads(raw or "{}")
    except ValueError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def view_values(view: dict[str, Any]) -> dict[str, Any]:
    """Flatten `view.state.values` to {action_id: value} for the element types we use."""
    flat: dict[str, Any] = {}
    state = view.get("state")
    blocks_state = state.get("values") if isinstance(state, dict) else None
    for block in (blocks_state or {}).values() if isinstance(blocks_state, dict) else ():
        for action_id, element in (block.items() if isinstance(block, dict) else ()):
            flat[str(action_id)] = element_value(element) if isinstance(element, dict) else None
    return flat


def text(values: dict[str, Any], action_id: str) -> str:
    """A form field's text ("" when missing or not text, whatever a payload claims)."""
    value = values.get(action_id)
    return value if isinstance(value, str) else ""


def choices(values: dict[str, Any], action_id: str) -> list[str]:
    """A multi-choice field's selected values (empty when missing or malformed)."""
    value = values.get(action_id)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def block_of(view: dict[str, Any], action_id: str) -> str:
    """The block id holding an input element (modal errors are keyed by block id)."""
    for block_id, block in ((view.get("state") or {}).get("values") or {}).items():
        if action_id in (block or {}):
            return str(block_id)
    return action_id


def element_value(element: dict[str, Any]) -> Any:
    kind = element.get("type")
    if kind == "static_select":
        option = element.get("selected_option")
        return option.get("value") if isinstance(option, dict) else None
    if kind == "users_select":
        return element.get("selected_user")
    if kind == "datepicker":
        return element.get("selected_date")
    if kind == "checkboxes":
        options = element.get("selected_options")
        return [o.get("value") for o in options if isinstance(o, dict)] \
            if isinstance(options, list) else []
    return element.get("value")


def update_form_errors(values: dict[str, Any]) -> dict[str, str]:
    """Inline errors for the status-update form (empty when it is valid)."""
    errors: dict[str, str] = {}
    if Status.parse(text(values, blocks.STATUS)) is None:
        errors[blocks.STATUS] = "Pick a status."
    if not text(values, blocks.IMPACT).strip():
        errors[blocks.IMPACT] = "Say who is affected and what is broken."
    if not text(values, blocks.CURRENT_ACTION).strip():
        errors[blocks.CURRENT_ACTION] = "Say what the team is doing now."
    if next_update_minutes(values) is None:
        errors[blocks.NEXT_UPDATE] = (
            f"Give the minutes until the next update (more than 0, at most "
            f"{MAX_NEXT_UPDATE_MINUTES}).")
    return errors


def next_update_minutes(values: dict[str, Any]) -> float | None:
    """The form's next-update delay in minutes, or None when it is not a usable number."""
    try:
        minutes = float(text(values, blocks.NEXT_UPDATE))
    except (TypeError, ValueError):
        return None
    return minutes if 0 < minutes <= MAX_NEXT_UPDATE_MINUTES else None


def plain(text: str) -> str:
    """Modal error text is plain: drop mrkdwn user links to bare IDs."""
    return text.replace("<@", "").replace(">", "")
