"""Reading provider and behaviour requests: JSON bodies, body fields and idempotency keys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import Request

from sandbox.problems import JSON, bad_request, invalid_field

MAX_KEY_LENGTH = 255


def _reject_constant(name: str) -> Any:
    """Refuse the non-standard JSON constants NaN and Infinity."""
    raise ValueError(f"{name} is not valid JSON")


def read_json_object(request: Request) -> JSON:
    """Return the request body as a JSON object or raise a 400 problem."""
    try:
        payload = json.loads(request.get_data(), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise bad_request("malformed-json", "Malformed JSON", f"body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise bad_request("malformed-json", "Malformed JSON", "body must be a JSON object")
    return payload


def idempotency_key(request: Request) -> str:
    """Return the request's Idempotency-Key header or raise a 400 problem."""
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise bad_request(
            "missing-idempotency-key",
            "Missing Idempotency-Key",
            f"provider calls require an Idempotency-Key header of 1 to {MAX_KEY_LENGTH} characters",
        )
    return key


@dataclass(frozen=True)
class Field:
    """One body field of a provider call: an int (at least `minimum`) or a non-empty string."""

    name: str
    kind: type[int] | type[str]
    optional: bool = False
    minimum: int | None = None

    def read(self, body: JSON) -> int | str | None:
        """Return the field's valid value (None when optional and absent) or raise a 422 problem."""
        value = body.get(self.name)
        if value is None:
            if self.optional:
                return None
            raise invalid_field(self.name, f"{self.name} is required")
        return self._read_int(value) if self.kind is int else self._read_str(value)

    def _read_int(self, value: Any) -> int:
        """Validate an integer value."""
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid_field(self.name, f"{self.name} must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise invalid_field(self.name, f"{self.name} must be at least {self.minimum}")
        return value

    def _read_str(self, value: Any) -> str:
        """Validate a non-empty string value."""
        if not isinstance(value, str) or not value.strip():
            raise invalid_field(self.name, f"{self.name} must be a non-empty string")
        return value


def read_fields(body: JSON, fields: tuple[Field, ...]) -> JSON:
    """Return the declared fields of a body, validated; other fields are ignored."""
    return {field.name: field.read(body) for field in fields}
