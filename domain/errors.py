"""Domain errors: raised by guard methods, translated to HTTP problems at the API boundary."""
from __future__ import annotations


class DomainError(Exception):
    """Base of every rule the domain refuses."""


class InvalidQuantity(DomainError):
    def __init__(self, qty: int) -> None:
        super().__init__(f"qty must be between 1 and 100, got {qty}")
        self.qty = qty


class InvalidTransition(DomainError):
    def __init__(self, what: str, current: str, new: str) -> None:
        super().__init__(f"{what} cannot go from {current} to {new}")
        self.current = current
        self.new = new


class NotFound(DomainError):
    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} does not exist")
        self.what = what
        self.ident = ident


class OrderNotFound(NotFound):
    def __init__(self, order_id: int) -> None:
        super().__init__("order", order_id)


class SagaNotFound(NotFound):
    def __init__(self, saga_id: int) -> None:
        super().__init__("saga", saga_id)


class SagaArchived(SagaNotFound):
    """Retention moved the finished saga out of the working tables (RETENTION_DAYS): its order and audit log stay."""

    def __init__(self, saga_id: int, status: str, order_id: int, archived_at: object, steps_kept: bool) -> None:
        where = ("its steps and attempts are in the archive tables" if steps_kept
                 else "its steps and attempts were deleted (RETENTION_MODE=delete)")
        NotFound.__init__(self, "saga", saga_id)
        self.args = (f"saga {saga_id} finished {status} and was archived by retention at {archived_at}; {where}; "
                     f"its order {order_id} and audit log are kept",)
        self.saga_id, self.status, self.order_id = saga_id, status, order_id
        self.archived_at, self.steps_kept = archived_at, steps_kept


class UnknownBook(NotFound):
    def __init__(self, book_id: int) -> None:
        super().__init__("book", book_id)


class IdempotencyConflict(DomainError):
    """An Idempotency-Key was reused with a different request body."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used for a different order")
        self.key = key


class SagaNeedsSupport(DomainError):
    """The order's saga is parked FAILED: a person must resolve it before anything else happens."""

    def __init__(self, saga_id: int) -> None:
        super().__init__(f"saga {saga_id} is parked FAILED and needs support before the order can change")
        self.saga_id = saga_id


class Overloaded(DomainError):
    """We cannot take more orders for a moment; ask the client to come back after retry_after_s."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(f"{reason}; please order again in {max(1, round(retry_after_s))} s")
        self.retry_after_s = retry_after_s
