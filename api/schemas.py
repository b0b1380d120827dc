"""Marshmallow schemas: what the API accepts and what it answers."""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

INT32_MAX = 2_147_483_647
# What no text field takes: C0 control characters (free text keeps tab, line feed and carriage return) and DEL,
# written with \uXXXX escapes, which Python and ECMA regular expressions read alike; and lone UTF-16 surrogates
# (JSON's "\ud800" decodes to one that no database can store), refused by a check of their own: regular expression
# engines disagree on surrogates (ECMA's reads every character past U+FFFF as two), so the documented pattern
# leaves them out and the field's description says so.
TEXT_PATTERN = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"
LINE_PATTERN = r"^[^\u0000-\u001f\u007f]*$"
SURROGATE = re.compile(r"[\ud800-\udfff]")
NO_CONTROLS = "control characters (NUL and the like) are not allowed"
NO_SURROGATES = "lone UTF-16 surrogates are not allowed"


class _Pattern(validate.Regexp):
    """validate.Regexp (so the OpenAPI shows the pattern) matching the whole value: Python's `$` would let a
    trailing line feed through."""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def _no_surrogates(value: str) -> None:
    if SURROGATE.search(value):
        raise ValidationError(NO_SURROGATES)


def text(max_length: int, min_length: int | None = None, line: bool = False, **kwargs: Any) -> fields.String:
    """A string field bounded in length and refusing control characters (`line`: a single line, no tab either)
    and lone surrogates."""
    pattern = _Pattern(re.compile(LINE_PATTERN if line else TEXT_PATTERN), error=NO_CONTROLS)
    metadata = dict(kwargs.pop("metadata", {}))
    rule = "no control characters" + (", one line" if line else "") + ", no lone UTF-16 surrogates"
    metadata["description"] = f"{metadata['description']} ({rule})" if metadata.get("description") else rule
    return fields.String(validate=[validate.Length(min_length, max_length), pattern, _no_surrogates],
                         metadata=metadata, **kwargs)


class RequestSchema(Schema):
    """A request body: a field it does not know is refused (422 naming it), not ignored."""

    class Meta:
        unknown = RAISE


def cents(value: int) -> Decimal:
    return (Decimal(value) / 100).quantize(Decimal("0.01"))


class Money(fields.Decimal):
    """An amount in currency units, sent as a string ("42.99") so that no client reads it as a float; documented
    as a string of format decimal (api/app.py registers the mapping)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(as_string=True, **kwargs)


class OrderCreateSchema(RequestSchema):
    customer_id = fields.Integer(required=True, strict=True, validate=validate.Range(1, INT32_MAX))
    book_id = fields.Integer(required=True, strict=True, validate=validate.Range(1, INT32_MAX))
    qty = fields.Integer(required=True, strict=True, validate=validate.Range(1, 100))


class CancelSchema(RequestSchema):
    reason = text(500, load_default=None, allow_none=True)


class SagaRefSchema(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"enum": ["order", "cancel"]})
    status = fields.String()


class OrderSchema(Schema):
    id = fields.Integer()
    customer_id = fields.Integer()
    book_id = fields.Integer()
    title = fields.String()
    qty = fields.Integer()
    amount = Money(metadata={"description": "price x qty, computed by the server"})
    amount_cents = fields.Integer()
    status = fields.String(metadata={"enum": ["PENDING", "PAID", "SHIPPED", "REJECTED", "CANCELLED"]})
    reason = fields.String(allow_none=True)
    saga_id = fields.Integer(allow_none=True, metadata={"description": "the order saga"})
    sagas = fields.List(fields.Nested(SagaRefSchema), metadata={"description": "every saga of the order"})
    needs_support = fields.Boolean(metadata={
        "description": "a saga of this order is parked FAILED: nothing changes until support resolves it "
                       "(the reason says why; a cancel waiting for support keeps the order's status)"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class StepSchema(Schema):
    name = fields.String()
    position = fields.Integer()
    status = fields.String()
    attempts = fields.Integer()
    max_attempts = fields.Integer()
    error = fields.String(allow_none=True)
    task_id = fields.String(allow_none=True)
    provider_ref = fields.String(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    available_at = fields.DateTime(allow_none=True)


class SagaSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    version = fields.Integer()
    order_id = fields.Integer()
    status = fields.String()
    cancel_requested = fields.Boolean()
    reason = fields.String(allow_none=True)
    recoveries = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    steps = fields.List(fields.Nested(StepSchema))


class BookSchema(Schema):
    id = fields.Integer()
    title = fields.String()
    price = Money()
    price_cents = fields.Integer()


class CustomerOrderSchema(Schema):
    order_id = fields.Integer()
    book_id = fields.Integer()
    title = fields.String()
    qty = fields.Integer()
    amount = Money()
    status = fields.String()
    saga_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class NotificationSchema(Schema):
    id = fields.Integer()
    order_id = fields.Integer()
    saga_id = fields.Integer()
    step = fields.String(metadata={"description": "the saga step that sends it (notify: shipped; notify_outcome: "
                                                  "how an undone order ended; notify_cancelled: cancelled after "
                                                  "completion)"})
    customer_id = fields.Integer()
    text = fields.String()
    status = fields.String(metadata={"enum": ["PENDING", "SENT", "FAILED"]})
    error = fields.String(allow_none=True)
    message_ref = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class NotificationQuerySchema(Schema):
    customer_id = fields.Integer(validate=validate.Range(1, INT32_MAX))


class HealthSchema(Schema):
    status = fields.String()
    database = fields.String()
    broker = fields.String()


class ReadySchema(Schema):
    status = fields.String(metadata={"description": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.String(),
                         metadata={"description": "each dependency: ok, timeout: ..., or error: <kind>"})


class ProblemSchema(Schema):
    """Every error, as api/problems.py sends it (RFC 9457): four members always, extension members on some."""

    type = fields.String(required=True, metadata={"description": "always about:blank: the status says it all"})
    title = fields.String(required=True, metadata={"description": "the status's phrase, e.g. Not Found"})
    status = fields.Integer(required=True, metadata={"description": "the HTTP status code"})
    detail = fields.String(required=True, metadata={"description": "what went wrong, for a person"})
    errors = fields.Dict(metadata={"description": "400 and 422: field -> its messages (nested for a nested body)"})
    order = fields.Nested(OrderSchema, metadata={"description": "402 of POST /orders: the REJECTED order"})
    saga_id = fields.Integer(metadata={"description": "409 of a support action: the saga it was refused on"})
    state = fields.String(allow_none=True,
                          metadata={"description": "409 of a support action: the saga's state, e.g. FAILED:pay"})
    checks = fields.Dict(keys=fields.String(), values=fields.String(),
                         metadata={"description": "503 of /readyz: each dependency: ok, timeout: ... or error: ..."})


def with_amount(row: Any) -> dict[str, Any]:
    """A read-model row as a dict, with its amount in currency units."""
    data = dict(row._mapping)
    data["amount"] = cents(data["amount_cents"])
    return data
