"""Domain rules: an order's amount, its quantity limits and the transitions of its status."""
from __future__ import annotations

import pytest

from domain.errors import InvalidQuantity, InvalidTransition
from domain.model import Book, Order, OrderStatus, order_transition_allowed

BOOK = Book(1, "Release It!", 4150)


def test_an_order_amount_is_price_times_quantity() -> None:
    order = Order.place(customer_id=3, book=BOOK, qty=3)
    assert order.amount_cents == 12450 and order.status is OrderStatus.PENDING


@pytest.mark.parametrize("qty", [0, -1, 101])
def test_quantity_outside_1_to_100_is_refused(qty: int) -> None:
    with pytest.raises(InvalidQuantity):
        Order.place(customer_id=3, book=BOOK, qty=qty)


def test_an_order_goes_pending_paid_shipped() -> None:
    order = Order.place(3, BOOK, 1)
    order.move_to(OrderStatus.PAID)
    order.move_to(OrderStatus.SHIPPED)
    assert order.status is OrderStatus.SHIPPED


@pytest.mark.parametrize("start, target", [
    (OrderStatus.PENDING, OrderStatus.SHIPPED),
    (OrderStatus.REJECTED, OrderStatus.PAID),
    (OrderStatus.CANCELLED, OrderStatus.PAID),
    (OrderStatus.SHIPPED, OrderStatus.PAID),
])
def test_an_order_refuses_transitions_its_life_does_not_allow(start: OrderStatus, target: OrderStatus) -> None:
    order = Order(customer_id=1, book_id=1, qty=1, amount_cents=1, status=start)
    with pytest.raises(InvalidTransition):
        order.move_to(target)
    assert not order_transition_allowed(start, target)


def test_moving_to_the_current_status_is_a_no_op() -> None:
    order = Order.place(3, BOOK, 1)
    order.move_to(OrderStatus.PENDING)
    assert order.status is OrderStatus.PENDING
