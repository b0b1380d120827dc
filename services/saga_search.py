"""Finding sagas for support: filters, newest first, paged; counts by status and by failing step."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from domain.errors import SagaNotFound
from infra import repository as repo
from infra.tables import audit_log, orders, saga_steps, sagas, status_in
from saga.orchestrator import StepStatus
from saga.order_saga import CANCEL_SAGA
from services.runtime import Runtime
from services.timeline import saga_timeline

MAX_PAGE_SIZE = 100
# A search counts its matches this far past the page's start, no further: the total of a filter that matches a
# long history (every COMPLETED saga) then reads as a lower bound, and the search costs what its page costs.
COUNT_LIMIT = 500


@dataclass(frozen=True)
class SagaFilter:
    statuses: tuple[str, ...] = ()
    kind: str | None = None
    failing_step: str | None = None
    error: str | None = None  # text in the saga's reason or in a failed step's error, any case
    order_id: int | None = None
    customer_id: int | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before

    def as_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items() if v not in (None, ())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SagaFilter:
        values = dict(data)
        for key in ("since", "until"):
            if isinstance(values.get(key), str):
                values[key] = datetime.fromisoformat(values[key])
        values["statuses"] = tuple(values.get("statuses") or ())
        return cls(**values)


_failed = saga_steps.alias("failed")


def _of_failing_step(column: Any) -> Any:
    """A column of the saga's failing step: its latest (by position) step that failed for good."""
    return (sa.select(column).where(_failed.c.saga_id == sagas.c.id, _failed.c.status == StepStatus.FAILED.value)
            .order_by(_failed.c.position.desc()).limit(1).scalar_subquery())


_FAILING_STEP = _of_failing_step(_failed.c.name)
_FAILING_ERROR = _of_failing_step(_failed.c.error)

# The search by failing step starts from the failed steps of that name (a partial index, newest saga first): the
# saga's failing step is that one when no step after it failed too.
_failing = saga_steps.alias("failing")
_later = saga_steps.alias("later")
_FAILED_HERE = status_in(_failing.c.status, StepStatus.FAILED.value)
_NONE_FAILED_LATER = ~sa.exists().where(_later.c.saga_id == _failing.c.saga_id,
                                        status_in(_later.c.status, StepStatus.FAILED.value),
                                        _later.c.position > _failing.c.position)


def _inline(value: str) -> Any:
    """A value written into the statement (quoted by SQLAlchemy) rather than bound: a plan made for one status or
    step name (a rare FAILED or a million COMPLETED) is not reused for another, as a prepared statement's generic
    plan would be after a few runs (seen: a backward scan of every saga to find 20 FAILED ones)."""
    return sa.literal(value, literal_execute=True)


def _where(f: SagaFilter) -> list[Any]:
    clauses: list[Any] = []
    if f.statuses:
        clauses.append(sagas.c.status.in_([_inline(status) for status in f.statuses]))
    if f.kind:
        clauses.append(sagas.c.kind == _inline(f.kind))
    if f.order_id is not None:
        clauses.append(sagas.c.order_id == f.order_id)
    if f.customer_id is not None:
        clauses.append(orders.c.customer_id == f.customer_id)
    if f.since is not None:
        clauses.append(sagas.c.created_at >= f.since)
    if f.until is not None:
        clauses.append(sagas.c.created_at < f.until)
    if f.failing_step:
        clauses += [_failing.c.name == _inline(f.failing_step), _NONE_FAILED_LATER]
    if f.error:
        pattern = "%" + f.error.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        step_error = sa.exists().where(saga_steps.c.saga_id == sagas.c.id,
                                       sa.func.lower(saga_steps.c.error).like(pattern, escape="\\"))
        clauses.append(sa.or_(sa.func.lower(sagas.c.reason).like(pattern, escape="\\"), step_error))
    return clauses


_FROM = sagas.join(orders, orders.c.id == sagas.c.order_id)
_FROM_FAILING = _FROM.join(_failing, sa.and_(_failing.c.saga_id == sagas.c.id, _FAILED_HERE))


_FAILING_ONLY = sagas.join(_failing, sa.and_(_failing.c.saga_id == sagas.c.id, _FAILED_HERE))


def _from(f: SagaFilter) -> Any:
    return _FROM_FAILING if f.failing_step else _FROM


def _count_from(f: SagaFilter) -> Any:
    """What a count reads: the order only when a filter needs it (every saga has exactly one)."""
    if f.customer_id is not None:
        return _from(f)
    return _FAILING_ONLY if f.failing_step else sagas


def search(rt: Runtime, f: SagaFilter, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """One page of the sagas matching f, newest first, and how many match in all."""
    with rt.db.reading() as conn:
        query = (
            sa.select(sagas.c.id, sagas.c.kind, sagas.c.status, sagas.c.order_id, orders.c.customer_id,
                      sagas.c.reason, sagas.c.cancel_requested, sagas.c.recoveries, sagas.c.created_at,
                      sagas.c.updated_at, sagas.c.finished_at, _FAILING_STEP.label("failing_step"),
                      _FAILING_ERROR.label("error"))
            .select_from(_from(f)).where(*_where(f)).order_by(sagas.c.id.desc()).offset(offset).limit(limit)
        )
        rows = [dict(row._mapping) for row in conn.execute(query)]
        total = conn.execute(bounded_count(f, offset + COUNT_LIMIT)).scalar_one()
    return rows, int(total)


def bounded_count(f: SagaFilter, limit: int) -> sa.Select[Any]:
    """How many sagas match f, counting no further than `limit`."""
    matching = sa.select(sagas.c.id).select_from(_count_from(f)).where(*_where(f)).limit(limit).subquery()
    return sa.select(sa.func.count()).select_from(matching)


def matching_ids(conn: Connection, f: SagaFilter, limit: int) -> Sequence[Any]:
    """(id, status, failing step) of up to `limit` sagas matching f, newest first."""
    return conn.execute(
        sa.select(sagas.c.id, sagas.c.status, _FAILING_STEP.label("failing_step"))
        .select_from(_from(f)).where(*_where(f)).order_by(sagas.c.id.desc()).limit(limit)
    ).all()


def counts(rt: Runtime, f: SagaFilter) -> dict[str, dict[str, int]]:
    """How many sagas match f, by status and by failing step."""
    with rt.db.reading() as conn:
        by_status = conn.execute(
            sa.select(sagas.c.status, sa.func.count()).select_from(_from(f)).where(*_where(f))
            .group_by(sagas.c.status)
        ).all()
        failing = _FAILING_STEP.label("failing_step")
        inner = sa.select(failing).select_from(_from(f)).where(*_where(f)).subquery()
        by_step = conn.execute(
            sa.select(inner.c.failing_step, sa.func.count()).where(inner.c.failing_step.is_not(None))
            .group_by(inner.c.failing_step)
        ).all()
    return {"by_status": {s: int(n) for s, n in by_status}, "by_failing_step": {s: int(n) for s, n in by_step}}


def audit_page(rt: Runtime, saga_id: int | None, bulk_token: str | None, offset: int,
               limit: int) -> tuple[list[dict[str, Any]], int]:
    """Audit entries, newest first: all of them, one saga's, or one bulk run's."""
    clauses = []
    if saga_id is not None:
        clauses.append(audit_log.c.saga_id == saga_id)
    if bulk_token is not None:
        clauses.append(audit_log.c.bulk_token == bulk_token)
    with rt.db.reading() as conn:
        rows = conn.execute(sa.select(audit_log).where(*clauses).order_by(audit_log.c.id.desc())
                            .offset(offset).limit(limit)).all()
        total = conn.execute(sa.select(sa.func.count()).select_from(audit_log).where(*clauses)).scalar_one()
    return [dict(row._mapping) for row in rows], int(total)


def timeline(rt: Runtime, saga_id: int) -> dict[str, Any]:
    """One saga for support: its steps with every attempt, its state changes, its audit log, what can be done."""
    from services.support import allowed_actions, state_label

    kept = saga_timeline(rt, saga_id)
    with rt.db.reading() as conn:
        saga = repo.load_saga(conn, saga_id)
        customer_id, recoveries = conn.execute(
            sa.select(orders.c.customer_id, sagas.c.recoveries).select_from(_FROM).where(sagas.c.id == saga_id)
        ).one()
        audit = [dict(r._mapping) for r in conn.execute(
            sa.select(audit_log).where(audit_log.c.saga_id == saga_id).order_by(audit_log.c.id))]
        kinds = {s.kind for s in repo.sagas_of_order(conn, saga.order_id)} if saga is not None else set()
    if saga is None:
        raise SagaNotFound(saga_id)
    definition = rt.definitions[saga.kind]
    steps = []
    for step in kept.steps:
        entry = {k: v for k, v in asdict(step).items() if k != "history"}
        entry["attempts_list"] = [_with_flower_link(asdict(a), rt.settings.flower_url) for a in step.history]
        steps.append(entry)
    body = {k: v for k, v in asdict(kept).items() if k != "steps"}
    body.update(customer_id=customer_id, recoveries=int(recoveries or 0), state=state_label(saga), steps=steps,
                audit=audit, actions=allowed_actions(definition, saga, CANCEL_SAGA.kind in kinds),
                state_changes=_state_changes(definition, body, steps, audit))
    return body


def _with_flower_link(attempt: dict[str, Any], flower_url: str) -> dict[str, Any]:
    """The attempt with `flower_url`, its task's page in Flower (FLOWER_URL; None without it or a task)."""
    task_id = attempt.get("task_id")
    attempt["flower_url"] = f"{flower_url}/task/{task_id}" if flower_url and task_id else None
    return attempt


def _state_changes(definition: Any, saga: dict[str, Any], steps: list[dict[str, Any]],
                   audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the saga's own rows tell of its life, with the support actions that changed it, in time order."""
    changes = [{"at": saga["created_at"], "status": "RUNNING", "by": "saga"}]
    begun = [s["started_at"] for s in steps if definition.is_compensation(s["name"]) and s["started_at"]]
    if begun:
        changes.append({"at": min(begun), "status": "COMPENSATING", "by": "saga"})
    if saga["finished_at"] is not None:
        changes.append({"at": saga["finished_at"], "status": saga["status"], "by": "saga"})
    changes += [{"at": a["at"], "status": (a["state_after"] or "").split(":")[0], "by": f"{a['action']} by "
                 f"{a['actor']}"} for a in audit if a["outcome"] == "done"]
    return sorted(changes, key=lambda c: c["at"])
