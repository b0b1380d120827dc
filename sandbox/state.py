"""In-process sandbox state: behaviours, ledgers and idempotency records behind one lock."""

from __future__ import annotations

import copy
import itertools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from sandbox.behavior import PROVIDERS, default_behavior
from sandbox.problems import JSON, Answer


def _now() -> str:
    """Return the current UTC time in ISO-8601."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Book:
    """One provider's ledger, id counters and at-most-once follow-ups (refunds, cancellations)."""

    def __init__(self) -> None:
        """Start with an empty ledger."""
        self.entries: list[JSON] = []
        self._by_id: dict[str, JSON] = {}
        self._counters: defaultdict[str, Iterator[int]] = defaultdict(lambda: itertools.count(1))
        self._follow_ups: dict[str, JSON] = {}

    def record(self, kind: str, prefix: str, key: str, data: JSON) -> JSON:
        """Append a ledger entry with a fresh `<prefix>_<n>` id and return it."""
        entry: JSON = {
            "id": f"{prefix}_{next(self._counters[prefix])}",
            "kind": kind,
            "idempotency_key": key,
            "order_id": data["order_id"],
            "created_at": _now(),
            **data,
        }
        self.entries.append(entry)
        self._by_id[entry["id"]] = entry
        return entry

    def find(self, entry_id: str, kind: str) -> JSON | None:
        """Return the entry with this id and kind, if any."""
        entry = self._by_id.get(entry_id)
        return entry if entry is not None and entry["kind"] == kind else None

    def follow_up(self, target_id: str) -> JSON | None:
        """Return the answer body of the follow-up already made on an entry, if any."""
        return self._follow_ups.get(target_id)

    def remember_follow_up(self, target_id: str, body: JSON) -> None:
        """Remember the answer body of the one follow-up allowed on an entry."""
        self._follow_ups[target_id] = body


Effect = Callable[[Book], Answer]


class SandboxState:
    """All mutable sandbox state, safe to share between request threads."""

    def __init__(self) -> None:
        """Start with default behaviours and empty ledgers."""
        self._lock = threading.Lock()
        self._behaviors: dict[str, JSON] = {}
        self._books: dict[str, Book] = {}
        self._answers: dict[tuple[str, str, str], Answer] = {}
        self.reset()

    def reset(self) -> None:
        """Restore default behaviours and forget all ledgers and idempotency records."""
        with self._lock:
            self._behaviors = {provider: default_behavior(provider) for provider in PROVIDERS}
            self._books = {provider: Book() for provider in PROVIDERS}
            self._answers = {}

    def behavior(self, provider: str) -> JSON:
        """Return a snapshot of a provider's behaviour."""
        with self._lock:
            return copy.deepcopy(self._behaviors[provider])

    def update_behavior(self, provider: str, changes: JSON) -> JSON:
        """Merge validated changes into a provider's behaviour and return the result."""
        with self._lock:
            self._behaviors[provider].update(copy.deepcopy(changes))
            return copy.deepcopy(self._behaviors[provider])

    def ledger(self, provider: str) -> list[JSON]:
        """Return a snapshot of a provider's ledger in recording order."""
        with self._lock:
            return [dict(entry) for entry in self._books[provider].entries]

    def perform(
        self, provider: str, operation: str, key: str, rejection: Answer | None, effect: Effect
    ) -> tuple[Answer, bool]:
        """Answer a call at most once per key; tell whether its effect was performed just now.

        A remembered answer for the key wins; otherwise the rejection (if any) or the effect's
        answer is remembered. A Problem raised by the effect is not remembered.
        """
        slot = (provider, operation, key)
        with self._lock:
            if slot in self._answers:
                return self._answers[slot], False
            answer = rejection if rejection is not None else effect(self._books[provider])
            self._answers[slot] = answer
            return answer, rejection is None
