"""What happens to a book order, on one screen: the steps, what undoes what, what is best effort."""
from __future__ import annotations

from domain.model import OrderStatus
from saga.definition import RetryPolicy, SagaDefinition, Step
from saga.orchestrator import SagaStatus

PAYMENT, DELIVERY, MESSAGING = "payment", "delivery", "messaging"

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
    compensations=(
        Step("cancel_payment", provider=PAYMENT, retry=RetryPolicy(max_attempts=8)),
        Step("cancel_delivery", provider=DELIVERY, retry=RetryPolicy(max_attempts=8)),
    ),
)

DEFINITIONS: dict[str, SagaDefinition] = {ORDER_SAGA.kind: ORDER_SAGA}


def definition_for(kind: str) -> SagaDefinition:
    """The definition of saga `kind`."""
    return DEFINITIONS[kind]


def order_outcome(saga: SagaStatus, cancel_requested: bool, confirmed: bool) -> OrderStatus | None:
    """The order status an ended order saga leaves: None when the order keeps the status its steps gave it."""
    if saga is SagaStatus.COMPENSATED:
        return OrderStatus.CANCELLED if cancel_requested or confirmed else OrderStatus.REJECTED
    return None
