"""Marshmallow schemas: what the API accepts and what it answers."""
from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

INT32_MAX = 2_147_483_647
# What no text field takes: C0 control characters (free text keeps tab, line feed and carriage return), DEL, and
# UTF-16 surrogates (JSON's "\ud800" decodes to one that no database can store; PostgreSQL refuses NUL in text).
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]*$"
LINE_PATTERN = r"^[^\x00-\x1f\x7f\ud800-\udfff]*$"
NO_CONTROLS = "control characters (NUL and the like) are not allowed"


class _Pattern(validate.Regexp):
    """validate.Regexp (so the OpenAPI shows the pattern) matching the whole value: Python's `$` would let a
    trailing line feed through."""

    def __call__(self, value: Any) -> Any:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def text(max_length: int, min_length: int | None = None, line: bool = False, **kwargs: Any) -> fields.String:
    """A string field bounded in length and refusing control characters (`line`: a single line, no tab either)."""
    pattern = _Pattern(re.compile(LINE_PATTERN if line else TEXT_PATTERN), error=NO_CONTROLS)
    return fields.String(validate=[validate.Length(min_length, max_length), pattern], **kwargs)


class RequestSchema(Schema):
    """A request body: a field it does not know is refused (422 naming it), not ignored."""

    class Meta:
        unknown = RAISE


def cents(value: int) -> Decimal:
    return (Decimal(value) / 100).quantize(Decimal("0.01"))


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
    amount = fields.Decimal(as_string=True, metadata={"description": "price x qty, computed by the server"})
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
    price = fields.Decimal(as_string=True)
    price_cents = fields.Integer()


class CustomerOrderSchema(Schema):
    order_id = fields.Integer()
    book_id = fields.Integer()
    title = fields.String()
    qty = fields.Integer()
    amount = fields.Decimal(as_string=True)
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
    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(metadata={"description": "field -> messages, for 422"})


def with_amount(row: Any) -> dict[str, Any]:
    """A read-model row as a dict, with its amount in currency units."""
    data = dict(row._mapping)
    data["amount"] = cents(data["amount_cents"])
    return data
