"""What each step does: the provider call it makes and what its outcome writes to our tables.

A table keyed by step name, so `saga/order_saga.py` stays pure data and this module stays the only place that
knows which provider method and which record belong to a step.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy.engine import Connection

from domain.model import (
    DeliveryStatus,
    NotificationStatus,
    Order,
    OrderStatus,
    PaymentStatus,
    cancellation_message,
    shipping_message,
)
from infra import repository as repo
from infra.providers import ProviderReply, Providers


@dataclass(frozen=True)
class StepContext:
    """Everything a step's provider call needs, read before the call (no transaction is open during it)."""

    saga_id: int
    step: str
    order: Order
    title: str
    charge_ref: str | None = None
    shipment_ref: str | None = None

    @property
    def key(self) -> str:
        """The idempotency key of this step's provider call: the same for every attempt."""
        return f"saga-{self.saga_id}:{self.step}"

    @property
    def order_id(self) -> int:
        assert self.order.id is not None
        return self.order.id


Action = Callable[[Providers, StepContext], ProviderReply]


def _refund(p: Providers, c: StepContext) -> ProviderReply:
    assert c.charge_ref, "cancel_payment runs only after a charge"
    return p.payment.refund(f"refund:{c.charge_ref}", c.order_id, c.charge_ref)


def _cancel_delivery(p: Providers, c: StepContext) -> ProviderReply:
    assert c.shipment_ref, "cancel_delivery runs only after a shipment"
    return p.delivery.cancel(f"cancel:{c.shipment_ref}", c.order_id, c.shipment_ref)


ACTIONS: dict[str, Action] = {
    "pay": lambda p, c: p.payment.charge(c.key, c.order_id, c.order.customer_id, c.order.amount_cents),
    "ship": lambda p, c: p.delivery.ship(c.key, c.order_id, c.order.customer_id, c.order.book_id, c.order.qty),
    "notify": lambda p, c: p.messaging.send(c.key, c.order_id, c.order.customer_id, message_text(c)),
    "notify_cancelled": lambda p, c: p.messaging.send(c.key, c.order_id, c.order.customer_id, message_text(c)),
    "cancel_payment": _refund,
    "cancel_delivery": _cancel_delivery,
}

# Steps that change only our database: the order status they set.
LOCAL_STEPS: dict[str, OrderStatus] = {
    "confirm": OrderStatus.PAID,
    "mark_shipped": OrderStatus.SHIPPED,
    "mark_cancelled": OrderStatus.CANCELLED,
}
MESSAGE_STEPS = ("notify", "notify_cancelled")


def message_text(c: StepContext) -> str:
    if c.step == "notify_cancelled":
        return cancellation_message(c.order_id, c.title)
    return shipping_message(c.order_id, c.title)


def record_success(conn: Connection, c: StepContext, reply: ProviderReply) -> None:
    """Write what a successful provider call changed."""
    if c.step == "pay":
        repo.save_payment(conn, c.order_id, status=PaymentStatus.CHARGED.value, amount_cents=c.order.amount_cents,
                          charge_ref=reply.reference)
    elif c.step == "cancel_payment":
        repo.update_payment(conn, c.order_id, status=PaymentStatus.REFUNDED.value, refund_ref=reply.reference)
    elif c.step == "ship":
        repo.save_delivery(conn, c.order_id, status=DeliveryStatus.SHIPPED.value, shipment_ref=reply.reference)
    elif c.step == "cancel_delivery":
        repo.update_delivery(conn, c.order_id, status=DeliveryStatus.CANCELLED.value, cancel_ref=reply.reference)
    elif c.step in MESSAGE_STEPS:
        _save_message(conn, c, NotificationStatus.SENT, error=None, ref=reply.reference)


def record_failure(conn: Connection, c: StepContext, error: str, final: bool, declined: bool) -> None:
    """Write what a failed attempt means for our records (a declined payment, a message not sent)."""
    if c.step == "pay" and declined:
        repo.save_payment(conn, c.order_id, status=PaymentStatus.DECLINED.value, amount_cents=c.order.amount_cents)
    elif c.step in MESSAGE_STEPS:
        _save_message(conn, c, NotificationStatus.FAILED if final else NotificationStatus.PENDING, error, None)


def _save_message(conn: Connection, c: StepContext, status: NotificationStatus, error: str | None,
                  ref: str | None) -> None:
    repo.save_notification(conn, c.saga_id, c.step, order_id=c.order_id, customer_id=c.order.customer_id,
                           text=message_text(c), status=status.value, error=error, message_ref=ref)


def step_context(saga_id: int, step: str, found: repo.OrderContext) -> StepContext:
    """What step `step` of saga `saga_id` needs for its provider call, from its order's context."""
    return StepContext(saga_id=saga_id, step=step, order=found.order, title=found.title,
                       charge_ref=found.charge_ref, shipment_ref=found.shipment_ref)


def follow_context(c: StepContext, step: str, order: Order, reply: ProviderReply | None) -> StepContext:
    """The context of `step`, claimed in the transaction that recorded step c.step (reply: c's successful
    answer, or None): what the claim would read there, since record_success has just written the reference."""
    charge_ref, shipment_ref = c.charge_ref, c.shipment_ref
    if reply is not None and c.step == "pay":
        charge_ref = reply.reference
    elif reply is not None and c.step == "ship":
        shipment_ref = reply.reference
    return replace(c, step=step, order=order, charge_ref=charge_ref, shipment_ref=shipment_ref)
