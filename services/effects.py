"""What each step does, one entry per step: the provider call it makes (or the order status a local step sets),
what its success and failure write, the reference it yields for later steps, and what the customer is told.

`saga/order_saga.py` says which steps a saga has and in what order; this table says what each of them does.
`check_step_table` holds every definition against it when a runtime or a worker is built, so a step missing here
stops the process at start instead of being sent as a task nobody runs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from sqlalchemy.engine import Connection

from domain.model import DeliveryStatus, NotificationStatus, Order, OrderStatus, PaymentStatus
from infra import repository as repo
from infra.providers import ProviderReply, Providers
from saga.definition import SagaDefinition
from saga.order_saga import order_ending


@dataclass(frozen=True)
class StepContext:
    """Everything a step's provider call needs, read before the call (no transaction is open during it)."""

    saga_id: int
    step: str
    order: Order
    title: str
    charge_ref: str | None = None
    shipment_ref: str | None = None
    cancel_requested: bool = False
    message: str | None = None  # what a message step sends (the saga definition's words for this ending)

    @property
    def key(self) -> str:
        """The idempotency key of this step's provider call: the same for every attempt."""
        return f"saga-{self.saga_id}:{self.step}"

    @property
    def order_id(self) -> int:
        assert self.order.id is not None
        return self.order.id


Call = Callable[[Providers, StepContext], ProviderReply]
OnSuccess = Callable[[Connection, StepContext, ProviderReply], None]
OnFailure = Callable[[Connection, StepContext, str, bool, bool], None]  # error, final, declined


def _nothing(*_: object) -> None:
    """Nothing to write."""


@dataclass(frozen=True)
class StepEffects:
    """What one step does. A provider step has `call`; a local step (no provider) has `sets_order`."""

    call: Call | None = None
    sets_order: OrderStatus | None = None  # the order status a local step sets
    on_success: OnSuccess = _nothing  # what a successful call writes
    on_failure: OnFailure = _nothing  # what a failed attempt writes (final: no attempt follows)
    yields: Literal["charge_ref", "shipment_ref"] | None = None  # the context field its reply's reference fills
    tells: Callable[[StepContext], str] | None = None  # the name of the definition's message a message step sends

    @property
    def is_local(self) -> bool:
        return self.call is None


class StepTableError(RuntimeError):
    """A saga definition names a step the table does not know, or knows only in part."""


# --- the calls -----------------------------------------------------------------------------------------------------
def _charge(p: Providers, c: StepContext) -> ProviderReply:
    return p.payment.charge(c.key, c.order_id, c.order.customer_id, c.order.amount_cents)


def _refund(p: Providers, c: StepContext) -> ProviderReply:
    assert c.charge_ref, "cancel_payment runs only after a charge"
    return p.payment.refund(f"refund:{c.charge_ref}", c.order_id, c.charge_ref)


def _ship(p: Providers, c: StepContext) -> ProviderReply:
    return p.delivery.ship(c.key, c.order_id, c.order.customer_id, c.order.book_id, c.order.qty)


def _cancel_delivery(p: Providers, c: StepContext) -> ProviderReply:
    assert c.shipment_ref, "cancel_delivery runs only after a shipment"
    return p.delivery.cancel(f"cancel:{c.shipment_ref}", c.order_id, c.shipment_ref)


def _send(p: Providers, c: StepContext) -> ProviderReply:
    assert c.message is not None, f"{c.step} has no message"
    return p.messaging.send(c.key, c.order_id, c.order.customer_id, c.message)


# --- what outcomes write -------------------------------------------------------------------------------------------
def _charged(conn: Connection, c: StepContext, reply: ProviderReply) -> None:
    repo.save_payment(conn, c.order_id, status=PaymentStatus.CHARGED.value, amount_cents=c.order.amount_cents,
                      charge_ref=reply.reference)


def _declined(conn: Connection, c: StepContext, error: str, final: bool, declined: bool) -> None:
    if declined:
        repo.save_payment(conn, c.order_id, status=PaymentStatus.DECLINED.value, amount_cents=c.order.amount_cents)


def _refunded(conn: Connection, c: StepContext, reply: ProviderReply) -> None:
    repo.update_payment(conn, c.order_id, status=PaymentStatus.REFUNDED.value, refund_ref=reply.reference)


def _shipped(conn: Connection, c: StepContext, reply: ProviderReply) -> None:
    repo.save_delivery(conn, c.order_id, status=DeliveryStatus.SHIPPED.value, shipment_ref=reply.reference)


def _delivery_cancelled(conn: Connection, c: StepContext, reply: ProviderReply) -> None:
    repo.update_delivery(conn, c.order_id, status=DeliveryStatus.CANCELLED.value, cancel_ref=reply.reference)


def _message_sent(conn: Connection, c: StepContext, reply: ProviderReply) -> None:
    _save_message(conn, c, NotificationStatus.SENT, error=None, ref=reply.reference)


def _message_failed(conn: Connection, c: StepContext, error: str, final: bool, declined: bool) -> None:
    _save_message(conn, c, NotificationStatus.FAILED if final else NotificationStatus.PENDING, error, None)


def _save_message(conn: Connection, c: StepContext, status: NotificationStatus, error: str | None,
                  ref: str | None) -> None:
    repo.save_notification(conn, c.saga_id, c.step, order_id=c.order_id, customer_id=c.order.customer_id,
                           text=c.message, status=status.value, error=error, message_ref=ref)


def message_step(tells: Callable[[StepContext], str]) -> StepEffects:
    """A best-effort message to the customer: the definition's message named by `tells`, kept in notifications."""
    return StepEffects(call=_send, on_success=_message_sent, on_failure=_message_failed, tells=tells)


STEP_EFFECTS: dict[str, StepEffects] = {
    "pay": StepEffects(call=_charge, on_success=_charged, on_failure=_declined, yields="charge_ref"),
    "confirm": StepEffects(sets_order=OrderStatus.PAID),
    "ship": StepEffects(call=_ship, on_success=_shipped, yields="shipment_ref"),
    "mark_shipped": StepEffects(sets_order=OrderStatus.SHIPPED),
    "notify": message_step(lambda c: "shipped"),
    "cancel_payment": StepEffects(call=_refund, on_success=_refunded),
    "cancel_delivery": StepEffects(call=_cancel_delivery, on_success=_delivery_cancelled),
    "notify_outcome": message_step(lambda c: order_ending(c.cancel_requested, c.charge_ref is not None)),
    "mark_cancelled": StepEffects(sets_order=OrderStatus.CANCELLED),
    "notify_cancelled": message_step(lambda c: "cancelled_refunded"),
}


def check_step_table(definitions: Iterable[SagaDefinition], table: Mapping[str, StepEffects]) -> None:
    """Raise StepTableError naming the first step of any definition that the table lacks or knows only in part."""
    for definition in definitions:
        for step in definition.all_steps:
            effects = table.get(step.name)
            where = f"step {step.name!r} of saga {definition.kind!r}"
            if effects is None:
                raise StepTableError(f"{where} has no entry in the step table (services/effects.py)")
            if effects.is_local != step.is_local:
                kind = "calls no provider" if step.is_local else f"calls {step.provider}"
                raise StepTableError(f"{where} {kind}, but its step table entry says otherwise")
            if step.is_local and effects.sets_order is None:
                raise StepTableError(f"{where} is local but its step table entry sets no order status")
            if effects.tells is not None and not definition.messages:
                raise StepTableError(f"{where} sends a message but saga {definition.kind!r} defines no messages")


def step_context(definition: SagaDefinition, table: Mapping[str, StepEffects], saga_id: int, step: str,
                 found: repo.OrderContext, cancel_requested: bool) -> StepContext:
    """What step `step` of saga `saga_id` needs for its provider call, from its order's context."""
    context = StepContext(saga_id=saga_id, step=step, order=found.order, title=found.title,
                          charge_ref=found.charge_ref, shipment_ref=found.shipment_ref,
                          cancel_requested=cancel_requested)
    return _with_message(definition, table[step], context)


def follow_context(definition: SagaDefinition, table: Mapping[str, StepEffects], c: StepContext, step: str,
                   order: Order, cancel_requested: bool, reply: ProviderReply | None) -> StepContext:
    """The context of `step`, claimed in the transaction that recorded step c.step (reply: c's successful
    answer, or None): what the claim would read there, since c's success has just written its reference."""
    yields = table[c.step].yields
    refs = {"charge_ref": c.charge_ref, "shipment_ref": c.shipment_ref}
    if reply is not None and yields is not None:
        refs[yields] = reply.reference
    following = replace(c, step=step, order=order, cancel_requested=cancel_requested, message=None,
                        charge_ref=refs["charge_ref"], shipment_ref=refs["shipment_ref"])
    return _with_message(definition, table[step], following)


def _with_message(definition: SagaDefinition, effects: StepEffects, c: StepContext) -> StepContext:
    if effects.tells is None:
        return c
    template = definition.messages[effects.tells(c)]
    amount = f"{c.order.amount_cents // 100}.{c.order.amount_cents % 100:02d}"
    return replace(c, message=template.format(order_id=c.order_id, title=c.title, amount=amount))
