"""Cancelling an order: stop its running saga at the next step boundary, or run a cancel saga after it completed."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from domain.errors import OrderNotFound, SagaNeedsSupport
from domain.model import Order, OrderStatus
from infra import repository as repo
from infra import retention as retention_store
from saga.orchestrator import CancelRequested, SagaStatus
from saga.order_saga import CANCEL_SAGA, ORDER_SAGA
from services.executor import Dispatch, Executor, start_saga
from services.orders import OrderView, get_order
from services.runtime import Runtime
from services.steps import publish

DEFAULT_REASON = "cancelled by customer"


@dataclass(frozen=True)
class CancelOrder:
    order_id: int
    reason: str | None = None


def cancel_order(rt: Runtime, cmd: CancelOrder) -> OrderView:
    """Record the cancel at once; repeated cancels change nothing and never refund twice."""
    with rt.db.transaction() as conn:
        dispatches = _cancel(rt, conn, cmd.order_id, cmd.reason or DEFAULT_REASON)
    publish(rt, dispatches, cmd.order_id)
    return get_order(rt, cmd.order_id)


def _cancel(rt: Runtime, conn: Connection, order_id: int, reason: str) -> list[Dispatch]:
    order = repo.get_order(conn, order_id, lock=True)
    if order is None:
        raise OrderNotFound(order_id)
    order.check_cancellable()
    if order.status is OrderStatus.CANCELLED:
        return []
    sagas = repo.sagas_of_order(conn, order_id)
    cancel_saga = next((s for s in sagas if s.kind == CANCEL_SAGA.kind), None)
    if cancel_saga is not None:
        if cancel_saga.status == SagaStatus.FAILED:
            raise SagaNeedsSupport(cancel_saga.id)  # the cancel is stuck: repeating it would change nothing
        return []  # a cancel saga already carries this cancel
    order_saga = next(s for s in sagas if s.kind == ORDER_SAGA.kind)
    return _cancel_order_saga(rt, conn, order, order_saga.id, reason)


def _cancel_order_saga(rt: Runtime, conn: Connection, order: Order, saga_id: int, reason: str) -> list[Dispatch]:
    saga = repo.load_saga(conn, saga_id, lock=True)
    if saga is None:  # retention moved it out (maybe while we waited for its lock): it had finished
        archived = retention_store.archived_saga(conn, saga_id)
        if archived is not None and archived.status == SagaStatus.COMPLETED:
            return _start_cancel_saga(rt, conn, order, reason)
        return []  # compensated: its order is already rejected or cancelled
    if saga.status is SagaStatus.FAILED:
        raise SagaNeedsSupport(saga_id)
    if saga.status is SagaStatus.COMPLETED:
        return _start_cancel_saga(rt, conn, order, reason)
    if saga.cancel_requested or saga.status is not SagaStatus.RUNNING:
        return []  # already cancelling or compensating: the running compensation finishes the job
    repo.update_saga(conn, saga_id, cancel_requested=True, reason=reason)
    saga.cancel_requested, saga.reason = True, reason
    return Executor(conn, saga, rt.clock(), rt).handle(CancelRequested(reason))


def _start_cancel_saga(rt: Runtime, conn: Connection, order: Order, reason: str) -> list[Dispatch]:
    assert order.id is not None
    return start_saga(conn, rt, rt.definitions[CANCEL_SAGA.kind], order.id, rt.clock(), reason)[1]
