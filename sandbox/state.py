"""Sandbox state: behaviours, ledgers and idempotency records behind one lock, the last two kept in a journal."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sandbox.behavior import PROVIDERS, default_behavior
from sandbox.journal import Journal
from sandbox.problems import JSON, Answer


def _now() -> str:
    """Return the current UTC time in ISO-8601."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Book:
    """One provider's ledger, id counters and at-most-once follow-ups (refunds, cancellations).

    Every change is also kept as a journal change until taken, so that it can be written and replayed.
    """

    def __init__(self) -> None:
        """Start with an empty ledger."""
        self.entries: list[JSON] = []
        self._by_id: dict[str, JSON] = {}
        self._last_numbers: dict[str, int] = {}
        self._follow_ups: dict[str, JSON] = {}
        self._changes: list[JSON] = []

    def record(self, kind: str, prefix: str, key: str, data: JSON) -> JSON:
        """Append a ledger entry with a fresh `<prefix>_<n>` id and return it."""
        entry: JSON = {
            "id": f"{prefix}_{self._last_numbers.get(prefix, 0) + 1}",
            "kind": kind,
            "idempotency_key": key,
            "order_id": data["order_id"],
            "created_at": _now(),
            **data,
        }
        self._add(entry)
        self._changes.append({"entry": entry})
        return entry

    def _add(self, entry: JSON) -> None:
        """Keep an entry and count its id's number as used."""
        self.entries.append(entry)
        self._by_id[entry["id"]] = entry
        prefix, _, number = entry["id"].rpartition("_")
        self._last_numbers[prefix] = max(self._last_numbers.get(prefix, 0), int(number))

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
        self._changes.append({"follow_up": [target_id, body]})

    def take_changes(self) -> list[JSON]:
        """Return the changes made since the last call, for the journal."""
        changes, self._changes = self._changes, []
        return changes

    def replay(self, change: JSON) -> None:
        """Make again a change read back from the journal."""
        if "entry" in change:
            self._add(change["entry"])
        else:
            target_id, body = change["follow_up"]
            self._follow_ups[target_id] = body


Effect = Callable[[Book], Answer]


class SandboxState:
    """All mutable sandbox state, safe to share between request threads.

    Ledgers, id counters, follow-ups and idempotency records outlive the process in the journal (when it has a
    file), as a real provider remembers what it did; behaviours start at their defaults in every process.
    """

    def __init__(self, journal: Journal | None = None) -> None:
        """Start with default behaviours and the ledgers the journal remembers (none without a journal file)."""
        self._lock = threading.Lock()
        self._journal = journal or Journal(None)
        self._behaviors: dict[str, JSON] = {}
        self._books: dict[str, Book] = {}
        self._answers: dict[tuple[str, str, str], Answer] = {}
        self._restore_behaviors()
        self._forget_ledgers()
        for record in self._journal.records():
            self._replay(record)

    def reset(self, ledgers: bool = False) -> None:
        """Restore default behaviours; with `ledgers`, also forget all ledgers and idempotency records for good."""
        with self._lock:
            self._restore_behaviors()
            if ledgers:
                self._forget_ledgers()
                self._journal.clear()

    def close(self) -> None:
        """Close the journal; the state must not be used afterwards."""
        with self._lock:
            self._journal.close()

    def _restore_behaviors(self) -> None:
        """Give every provider its default behaviour."""
        self._behaviors = {provider: default_behavior(provider) for provider in PROVIDERS}

    def _forget_ledgers(self) -> None:
        """Start every provider's book and the idempotency records afresh (in memory)."""
        self._books = {provider: Book() for provider in PROVIDERS}
        self._answers = {}

    def _replay(self, record: JSON) -> None:
        """Redo one journal record: its ledger changes and its remembered answer."""
        provider, operation, key = record["slot"]
        book = self._books[provider]
        for change in record["changes"]:
            book.replay(change)
        self._answers[(provider, operation, key)] = Answer(**record["answer"])

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

        A remembered answer for the key wins; otherwise the effect's answer is remembered, and journaled with
        the ledger changes it made before the call is answered. A rejection (the call's input refused, as a
        real provider refuses a request that fails validation) is not remembered: the same key may be sent
        again once the input is fixed (Stripe saves no idempotent result for a request that failed
        validation). A Problem raised by the effect is not remembered either (effects raise before they change
        the book).
        """
        slot = (provider, operation, key)
        with self._lock:
            if slot in self._answers:
                return self._answers[slot], False
            if rejection is not None:
                return rejection, False
            book = self._books[provider]
            answer = effect(book)
            self._answers[slot] = answer
            remembered = {"status": answer.status, "body": answer.body, "problem": answer.problem}  # not asdict: slow
            record = {"slot": slot, "answer": remembered, "changes": book.take_changes()}
            generation = self._journal.generation
        self._journal.append(record, generation)  # written out of the lock: under it the threads queued (measured)
        return answer, True
