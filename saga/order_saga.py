"""What happens to a book order, on one screen: the steps, what undoes what, what is best effort."""
from __future__ import annotations

from domain.model import OrderStatus
from saga.definition import RetryPolicy, SagaDefinition, Step
from saga.orchestrator import SagaStatus

PAYMENT, DELIVERY, MESSAGING = "payment", "delivery", "messaging"
PROVIDERS = (PAYMENT, DELIVERY, MESSAGING)

REFUND = Step("cancel_payment", provider=PAYMENT, can_undo=False, retry=RetryPolicy(max_attempts=8))
CANCEL_DELIVERY = Step("cancel_delivery", provider=DELIVERY, can_undo=False, retry=RetryPolicy(max_attempts=8))

NOTIFY_OUTCOME = Step("notify_outcome", provider=MESSAGING, can_undo=False, best_effort=True,
                      retry=RetryPolicy(max_attempts=8, cap_s=30.0))

# The order: charge, confirm, ship, mark shipped, tell the customer. Undone in reverse; the customer hears how
# an undone order ended.
ORDER_SAGA = SagaDefinition(
    kind="order",
    version=1,
    steps=(
        Step("pay", provider=PAYMENT, compensation="cancel_payment", retry=RetryPolicy(max_attempts=5)),
        Step("confirm"),  # order -> PAID
        Step("ship", provider=DELIVERY, compensation="cancel_delivery", retry=RetryPolicy(max_attempts=8)),
        Step("mark_shipped"),  # order -> SHIPPED
        Step("notify", provider=MESSAGING, can_undo=False, best_effort=True,
             retry=RetryPolicy(max_attempts=8, cap_s=30.0)),
    ),
    compensations=(REFUND, CANCEL_DELIVERY, NOTIFY_OUTCOME),
    closing=NOTIFY_OUTCOME.name,
    messages={
        "shipped": "Your order #{order_id} ({title}) has shipped.",
        "not_paid": "Your order #{order_id} ({title}) was not placed: the payment did not go through. "
                    "You have not been charged.",
        "refunded": "Your order #{order_id} ({title}) could not be completed. Your payment of {amount} has been "
                    "refunded.",
        "cancelled": "Your order #{order_id} ({title}) has been cancelled as you asked. You have not been charged.",
        "cancelled_refunded": "Your order #{order_id} ({title}) has been cancelled as you asked. Your payment of "
                              "{amount} has been refunded.",
    },
)


def order_ending(cancel_requested: bool, charged: bool) -> str:
    """Which of the order saga's messages tells how an undone order ended."""
    if cancel_requested:
        return "cancelled_refunded" if charged else "cancelled"
    return "refunded" if charged else "not_paid"


# Cancelling an order whose saga already completed: undo the shipment, refund, mark it, tell the customer.
# Nothing here can be undone; a step that fails for good parks the saga FAILED for support.
CANCEL_SAGA = SagaDefinition(
    kind="cancel",
    version=1,
    steps=(
        CANCEL_DELIVERY,
        REFUND,
        Step("mark_cancelled"),  # order -> CANCELLED
        Step("notify_cancelled", provider=MESSAGING, can_undo=False, best_effort=True,
             retry=RetryPolicy(max_attempts=8, cap_s=30.0)),
    ),
    compensate_on_failure=False,
    messages={"cancelled_refunded": "Your order #{order_id} ({title}) has been cancelled and your payment of "
                                    "{amount} refunded."},
)

DEFINITIONS: dict[str, SagaDefinition] = {d.kind: d for d in (ORDER_SAGA, CANCEL_SAGA)}


def order_outcome(kind: str, saga: SagaStatus, cancel_requested: bool, current: OrderStatus) -> OrderStatus | None:
    """The order status an undone order saga leaves (None: the order keeps the status its steps gave it): a
    cancel, or a failure after the order was confirmed, cancels it; a failure before that rejects it."""
    if current.is_final:
        return None
    if kind == ORDER_SAGA.kind and saga is SagaStatus.COMPENSATED:
        return OrderStatus.CANCELLED if cancel_requested or current is not OrderStatus.PENDING else OrderStatus.REJECTED
    return None
