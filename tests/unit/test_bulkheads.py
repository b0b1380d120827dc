"""Bulkheads: a cap on calls in flight per provider; a step waits a little for a slot, then gives up."""
from __future__ import annotations

import threading
import time

import pytest

from infra.bulkheads import BulkheadFull, Bulkheads


def hold(bulkheads: Bulkheads, provider: str, release: threading.Event) -> threading.Thread:
    """A call holding one of the provider's slots until `release` is set."""
    taken = threading.Event()

    def call() -> None:
        with bulkheads.slot(provider):
            taken.set()
            release.wait(5)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    assert taken.wait(5)
    return thread


def test_a_slot_freed_within_the_wait_lets_the_call_through() -> None:
    bulkheads = Bulkheads({"messaging": 1}, wait_s=2.0, max_waiters=1)
    release = threading.Event()
    holder = hold(bulkheads, "messaging", release)
    threading.Timer(0.1, release.set).start()

    with bulkheads.slot("messaging"):
        pass
    holder.join(5)


def test_a_provider_whose_slots_stay_taken_is_given_up_after_the_wait_without_a_call() -> None:
    bulkheads = Bulkheads({"messaging": 1}, retry_after_s=1.0, wait_s=0.2, max_waiters=1)
    release = threading.Event()
    holder = hold(bulkheads, "messaging", release)
    started = time.monotonic()

    with pytest.raises(BulkheadFull) as raised, bulkheads.slot("messaging"):
        raise AssertionError("no call may be made")

    assert 0.2 <= time.monotonic() - started < 1.0
    assert raised.value.retry_after_s == 1.0
    with bulkheads.slot("payment"):  # another provider is not capped by it
        pass
    release.set()
    holder.join(5)


def test_without_a_wait_a_full_bulkhead_refuses_at_once() -> None:
    bulkheads = Bulkheads({"messaging": 1})
    release = threading.Event()
    holder = hold(bulkheads, "messaging", release)
    started = time.monotonic()

    with pytest.raises(BulkheadFull), bulkheads.slot("messaging"):
        pass

    assert time.monotonic() - started < 0.1
    release.set()
    holder.join(5)


def test_no_more_than_max_waiters_wait_at_once_whatever_their_provider() -> None:
    bulkheads = Bulkheads({"messaging": 1, "delivery": 1}, wait_s=2.0, max_waiters=1)
    release = threading.Event()
    holders = [hold(bulkheads, "messaging", release), hold(bulkheads, "delivery", release)]
    waiting = threading.Thread(target=lambda: bulkheads.slot("messaging").__enter__(), daemon=True)
    waiting.start()  # takes the one waiting place until a messaging slot frees up
    time.sleep(0.1)
    started = time.monotonic()

    with pytest.raises(BulkheadFull), bulkheads.slot("delivery"):
        pass

    assert time.monotonic() - started < 0.1  # no waiting place left: given up at once
    release.set()
    for thread in [*holders, waiting]:
        thread.join(5)
