"""Bulk support actions: a dry run names exactly which sagas (and in which state) an action will touch and gives a
token for that set; the real run takes the token and works through the set in bounded batches, each saga in its
own short transaction, touching only those still in the state the dry run showed."""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from domain.errors import DomainError, NotFound
from infra.tables import bulk_plans
from services import support
from services.runtime import Runtime
from services.saga_search import SagaFilter, matching_ids
from services.support import Action, ActionRefused, Actor, SupportAction

MAX_SAGAS = 10_000  # one plan; narrow the filter for more
MAX_BATCH = 100
PLAN_TTL = timedelta(hours=1)


class BulkPlanNotFound(NotFound):
    def __init__(self, token: str) -> None:
        super().__init__("bulk plan", token[:8] + "…")


class BulkPlanExpired(DomainError):
    def __init__(self) -> None:
        super().__init__("the bulk plan expired; make a new dry run")


@dataclass(frozen=True)
class Progress:
    token: str
    action: str
    step: str | None
    reason: str
    filter: dict[str, Any]
    total: int
    done: int
    touched: int
    skipped: int
    created_by: str
    created_at: datetime
    expires_at: datetime

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def plan(rt: Runtime, actor: Actor, action: Action, reason: str, f: SagaFilter, step: str | None = None) -> Progress:
    """The dry run: the matching sagas and their states, kept under a new token."""
    now = rt.clock()
    token = secrets.token_urlsafe(24)
    with rt.db.transaction() as conn:
        rows = matching_ids(conn, f, MAX_SAGAS + 1)
        if len(rows) > MAX_SAGAS:
            raise ActionRefused(0, f"bulk {action.value}", f"over {MAX_SAGAS} sagas match; narrow the filter")
        chosen = [[row.id, f"{row.status}:{row.failing_step}" if row.failing_step else row.status] for row in rows]
        conn.execute(bulk_plans.insert(), {
            "token": token, "action": action.value, "step": step, "reason": reason,
            "filter": json.dumps(f.as_dict()), "sagas": json.dumps(chosen), "total": len(chosen), "cursor": 0,
            "touched": 0, "skipped": 0, "created_by": actor.name, "created_at": now,
            "expires_at": now + PLAN_TTL, "updated_at": now,
        })
    return progress(rt, token)


def _row(conn: Any, token: str, lock: bool = False) -> Any:
    query = sa.select(bulk_plans).where(bulk_plans.c.token == token)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise BulkPlanNotFound(token)
    return row


def _progress(row: Any) -> Progress:
    return Progress(row.token, row.action, row.step, row.reason, json.loads(row.filter), row.total, row.cursor,
                    row.touched, row.skipped, row.created_by, row.created_at, row.expires_at)


def progress(rt: Runtime, token: str) -> Progress:
    with rt.db.reading() as conn:
        return _progress(_row(conn, token))


def planned_sagas(rt: Runtime, token: str, offset: int, limit: int) -> list[dict[str, Any]]:
    """One page of the plan's sagas: id and the state the dry run saw."""
    with rt.db.reading() as conn:
        chosen = json.loads(_row(conn, token).sagas)
    return [{"saga_id": saga_id, "state": state} for saga_id, state in chosen[offset:offset + limit]]


def run_batch(rt: Runtime, token: str, actor: Actor, size: int) -> tuple[Progress, list[dict[str, Any]]]:
    """Act on the plan's next `size` sagas (at most MAX_BATCH); returns the progress and what became of each.

    The batch is claimed in a short transaction of its own, so two runners never take the same sagas."""
    size = max(1, min(size, MAX_BATCH))
    now = rt.clock()
    with rt.db.transaction() as conn:
        row = _row(conn, token, lock=True)
        if row.expires_at < now:
            raise BulkPlanExpired()
        chosen = json.loads(row.sagas)[row.cursor:row.cursor + size]
        conn.execute(bulk_plans.update().where(bulk_plans.c.token == token)
                     .values(cursor=row.cursor + len(chosen), updated_at=now))
    results = []
    touched = skipped = 0
    for saga_id, state in chosen:
        cmd = SupportAction(saga_id, Action(row.action), row.reason, actor, step=row.step, expect=state,
                            bulk_token=token)
        try:
            result = support.perform(rt, cmd)
        except (ActionRefused, NotFound) as exc:
            skipped += 1  # on the audit record as refused
            results.append({"saga_id": saga_id, "outcome": "skipped", "detail": str(exc)})
            continue
        touched += 1
        results.append({"saga_id": saga_id, "outcome": "done", "state_before": result.state_before,
                        "state_after": result.state_after})
    with rt.db.transaction() as conn:
        conn.execute(bulk_plans.update().where(bulk_plans.c.token == token).values(
            touched=bulk_plans.c.touched + touched, skipped=bulk_plans.c.skipped + skipped, updated_at=rt.clock()))
    return progress(rt, token), results
