"""The provider operations: their body fields and their effects on a provider's book."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandbox.calls import Field
from sandbox.problems import JSON, PROBLEM_TYPE_BASE, Answer, Problem, invalid_field
from sandbox.state import Book


@dataclass(frozen=True)
class Call:
    """A validated provider call: its idempotency key, body fields and behaviour snapshot."""

    key: str
    data: JSON
    behavior: JSON


@dataclass(frozen=True)
class Operation:
    """A provider endpoint `POST /<provider>/<name>`: its body fields and effect."""

    provider: str
    name: str
    fields: tuple[Field, ...]
    effect: Callable[[Book, Call], Answer]


_REJECTION_TITLES = {
    "payment": "Invalid card",
    "delivery": "Undeliverable address",
    "messaging": "Invalid recipient",
}


def rejection(provider: str) -> Answer:
    """Return the permanent 422 answer of a provider set to reject every call."""
    title = _REJECTION_TITLES[provider]
    detail = f"the {provider} provider rejects the call permanently ({title.lower()})"
    return Problem(422, "rejected", title, detail).answer()


def unavailable(provider: str, reason: str) -> Problem:
    """Return the transient 503 problem of an unavailable provider."""
    return Problem(503, "unavailable", "Provider unavailable", f"the {provider} provider is {reason}")


def _decline(book: Book, call: Call, limit: float) -> Answer:
    """Record a declined charge and return its 402 answer."""
    entry = book.record("decline", "dc", call.key, call.data)
    amount = call.data["amount_cents"]
    return Answer(
        402,
        {
            "type": PROBLEM_TYPE_BASE + "card-declined",
            "id": entry["id"],
            "status": "declined",
            "order_id": entry["order_id"],
            "amount_cents": amount,
            "title": "Card declined",
            "detail": f"amount_cents {amount} is above the decline limit {limit}",
        },
        problem=True,
    )


def charge(book: Book, call: Call) -> Answer:
    """Charge an order, or decline it when the amount is above `decline_over`."""
    limit = call.behavior["decline_over"]
    if limit is not None and call.data["amount_cents"] > limit:
        return _decline(book, call, limit)
    entry = book.record("charge", "ch", call.key, call.data)
    body = {"id": entry["id"], "status": "charged", "order_id": entry["order_id"]}
    return Answer(201, {**body, "amount_cents": entry["amount_cents"]})


@dataclass(frozen=True)
class FollowUp:
    """An at-most-once follow-up on an earlier entry, such as the refund of a charge."""

    field: str
    target_kind: str
    target_label: str
    kind: str
    prefix: str
    status: str


_REFUND = FollowUp("charge_id", "charge", "charge", "refund", "rf", "refunded")
_CANCELLATION = FollowUp("shipment_id", "ship", "shipment", "cancel", "sc", "cancelled")


def _target(book: Book, call: Call, follow_up: FollowUp) -> JSON:
    """Return the entry a follow-up targets, or raise 404 (unknown) or 422 (other order)."""
    target_id, label = call.data[follow_up.field], follow_up.target_label
    entry = book.find(target_id, follow_up.target_kind)
    if entry is None:
        raise Problem(404, f"unknown-{label}", f"Unknown {label}", f"no {label} with id {target_id}")
    if entry["order_id"] != call.data["order_id"]:
        order = call.data["order_id"]
        detail = f"order_id {order} does not match {label} {target_id} of order {entry['order_id']}"
        raise invalid_field("order_id", detail)
    return entry


def _once(book: Book, call: Call, follow_up: FollowUp, extra: JSON) -> Answer:
    """Make the one follow-up allowed on a target; later ones answer 200 with the first body."""
    target_id = call.data[follow_up.field]
    earlier = book.follow_up(target_id)
    if earlier is not None:
        return Answer(200, earlier)
    entry = book.record(follow_up.kind, follow_up.prefix, call.key, {**call.data, **extra})
    body = {"id": entry["id"], "status": follow_up.status, follow_up.field: target_id}
    body = {**body, "order_id": entry["order_id"], **extra}
    book.remember_follow_up(target_id, body)
    return Answer(201, body)


def refund(book: Book, call: Call) -> Answer:
    """Refund a charge in full, at most once per charge."""
    charged = _target(book, call, _REFUND)
    return _once(book, call, _REFUND, {"amount_cents": charged["amount_cents"]})


def ship(book: Book, call: Call) -> Answer:
    """Ship an order."""
    entry = book.record("ship", "sh", call.key, call.data)
    return Answer(201, {"id": entry["id"], "status": "shipped", "order_id": entry["order_id"]})


def cancel(book: Book, call: Call) -> Answer:
    """Cancel a shipment, at most once per shipment."""
    _target(book, call, _CANCELLATION)
    return _once(book, call, _CANCELLATION, {})


def send(book: Book, call: Call) -> Answer:
    """Send a message to a customer."""
    entry = book.record("message", "msg", call.key, call.data)
    body = {"id": entry["id"], "status": "sent", "order_id": entry["order_id"]}
    return Answer(201, {**body, "customer_id": entry["customer_id"]})


_ORDER = Field("order_id", int)
_CUSTOMER = Field("customer_id", int, optional=True)

OPERATIONS = (
    Operation("payment", "charges", (_ORDER, Field("amount_cents", int, minimum=1), _CUSTOMER), charge),
    Operation("payment", "refunds", (_ORDER, Field("charge_id", str)), refund),
    Operation(
        "delivery",
        "shipments",
        (
            _ORDER,
            _CUSTOMER,
            Field("book_id", int, optional=True),
            Field("qty", int, optional=True, minimum=1),
        ),
        ship,
    ),
    Operation("delivery", "cancellations", (_ORDER, Field("shipment_id", str)), cancel),
    Operation("messaging", "messages", (_ORDER, Field("customer_id", int), Field("text", str)), send),
)
