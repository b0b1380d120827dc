"""Provider behaviours: their defaults and the validation of behaviour changes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from sandbox.problems import JSON, invalid_field

PROVIDERS = ("payment", "delivery", "messaging")

MAX_DELAY_MS = 600_000

_COMMON_DEFAULTS: JSON = {
    "latency_ms": [0, 0],
    "error_rate": 0.0,
    "down": False,
    "reject": False,
    "lose_response": 0.0,
    "hang_ms": 10_000,
}

_PAYMENT_DEFAULTS: JSON = {"decline_over": None}


def default_behavior(provider: str) -> JSON:
    """Return a fresh copy of a provider's default behaviour."""
    extra = _PAYMENT_DEFAULTS if provider == "payment" else {}
    return copy.deepcopy({**_COMMON_DEFAULTS, **extra})


def _is_int(value: Any) -> bool:
    """Tell whether a JSON value is an integer (booleans excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """Tell whether a JSON value is a number (booleans excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_delay(value: Any) -> bool:
    """Tell whether a JSON value is a delay in milliseconds within bounds."""
    return _is_int(value) and 0 <= value <= MAX_DELAY_MS


def _delay(value: Any) -> int:
    """Validate a delay in milliseconds."""
    if not _is_delay(value):
        raise ValueError(f"must be an integer between 0 and {MAX_DELAY_MS}")
    return value


def _latency(value: Any) -> list[int]:
    """Validate a [min, max] latency range in milliseconds."""
    if not (isinstance(value, list) and len(value) == 2 and all(map(_is_delay, value))):
        raise ValueError(f"must be a [min, max] pair of integers between 0 and {MAX_DELAY_MS}")
    if value[0] > value[1]:
        raise ValueError("must have min <= max")
    return list(value)


def _probability(value: Any) -> float:
    """Validate a probability between 0.0 and 1.0."""
    if not _is_number(value) or not 0 <= value <= 1:
        raise ValueError("must be a number between 0.0 and 1.0")
    return float(value)


def _flag(value: Any) -> bool:
    """Validate a boolean switch."""
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _limit(value: Any) -> int | float | None:
    """Validate an optional non-negative amount in cents."""
    if value is not None and (not _is_number(value) or value < 0):
        raise ValueError("must be a non-negative number or null")
    return value


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "latency_ms": _latency,
    "error_rate": _probability,
    "down": _flag,
    "reject": _flag,
    "lose_response": _probability,
    "hang_ms": _delay,
    "decline_over": _limit,
}


def validate_changes(provider: str, changes: JSON) -> JSON:
    """Return the validated behaviour changes or raise a 422 problem naming the first bad field."""
    allowed = default_behavior(provider)
    valid: JSON = {}
    for field, value in changes.items():
        if field not in allowed:
            raise invalid_field(field, f"{field} is not a behaviour field of {provider}")
        try:
            valid[field] = _VALIDATORS[field](value)
        except ValueError as error:
            raise invalid_field(field, f"{field} {error}") from None
    return valid
