"""The bookstore's domain: books, orders and the provider records an order collects.

Plain classes with guard methods; they import nothing but the standard library.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

from domain.errors import InvalidQuantity, InvalidTransition

MIN_QTY = 1
MAX_QTY = 100


def utcnow() -> datetime:
    """The current time in UTC, aware."""
    return datetime.now(UTC)


class OrderStatus(enum.StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    SHIPPED = "SHIPPED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.REJECTED, OrderStatus.CANCELLED)


# Which order status may follow which; SHIPPED can still be cancelled (a cancel saga undoes it).
_ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.REJECTED, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED, OrderStatus.REJECTED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.CANCELLED}),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class Book:
    id: int
    title: str
    price_cents: int


@dataclass
class Order:
    """A customer's order of one book; its amount is computed here, never taken from the client."""

    customer_id: int
    book_id: int
    qty: int
    amount_cents: int
    status: OrderStatus = OrderStatus.PENDING
    id: int | None = None
    reason: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    @classmethod
    def place(cls, customer_id: int, book: Book, qty: int) -> Order:
        """A new PENDING order for qty copies of book."""
        check_quantity(qty)
        return cls(customer_id=customer_id, book_id=book.id, qty=qty, amount_cents=book.price_cents * qty)

    def move_to(self, status: OrderStatus, reason: str | None = None) -> None:
        """Change status, refusing transitions the order's life does not allow."""
        if status is self.status:
            return
        if status not in _ORDER_TRANSITIONS[self.status]:
            raise InvalidTransition("order", self.status.value, status.value)
        self.status = status
        self.reason = reason if reason is not None else self.reason
        self.updated_at = utcnow()

    def flag(self, reason: str) -> None:
        """Say why the order is stuck where it is (a saga of it is parked for support); the status stays."""
        self.reason = reason
        self.updated_at = utcnow()

    def check_cancellable(self) -> None:
        """A rejected order was never established: there is nothing to cancel."""
        if self.status is OrderStatus.REJECTED:
            raise InvalidTransition("order", self.status.value, OrderStatus.CANCELLED.value)


def check_quantity(qty: int) -> None:
    """Raise InvalidQuantity unless MIN_QTY <= qty <= MAX_QTY."""
    if not MIN_QTY <= qty <= MAX_QTY:
        raise InvalidQuantity(qty)


def order_transition_allowed(current: OrderStatus, new: OrderStatus) -> bool:
    """True when an order in `current` may move to `new`."""
    return new is current or new in _ORDER_TRANSITIONS[current]


class PaymentStatus(enum.StrEnum):
    CHARGED = "CHARGED"
    DECLINED = "DECLINED"
    REFUNDED = "REFUNDED"


class DeliveryStatus(enum.StrEnum):
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


class NotificationStatus(enum.StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"

