"""The support API under /admin: find sagas, read one saga's timeline, act on it (alone or in bulk), read the
audit log. Every action needs a reason and lands in the audit log with who did it."""
from __future__ import annotations

from typing import Any

from flask import Flask
from flask.views import MethodView
from flask_smorest import Api
from werkzeug.routing import BaseConverter

from api.admin_schemas import (
    ActionResultSchema,
    ActionSchema,
    AuditEntrySchema,
    AuditQuerySchema,
    BulkPageQuerySchema,
    BulkPlanRequestSchema,
    BulkProgressSchema,
    BulkRunSchema,
    CountsSchema,
    DefinitionSchema,
    SagaFilterSchema,
    SagaSummarySchema,
    TimelineSchema,
    WhoamiSchema,
)
from api.auth import current_principal, requires
from api.paging import Blueprint
from api.views import ID, runtime
from services import bulk, saga_search
from services.saga_search import SagaFilter
from services.support import Action, Actor, SupportAction, perform

admin = Blueprint("admin", __name__, url_prefix="/admin",
                  description="Support: find sagas, see why they failed, retry, resume, skip, compensate or cancel "
                              "them (one or in bulk), and read the audit log")

ACTION = "any(retry, resume, skip, compensate, cancel)"


class BulkTokenConverter(BaseConverter):
    """A bulk plan's token as `secrets.token_urlsafe` makes it: any other path (a NUL, a space) is a 404 before
    it reaches the database."""

    regex = "[A-Za-z0-9_-]{1,64}"


def register_converters(app: Flask, api: Api) -> None:
    """The path converters /admin uses, known to the URL map and to the OpenAPI (before the blueprint is
    registered)."""
    app.url_map.converters["bulk_token"] = BulkTokenConverter
    api.register_converter(BulkTokenConverter, lambda _: {"type": "string", "pattern": f"^{BulkTokenConverter.regex}$"})


def actor() -> Actor:
    principal = current_principal()
    assert principal is not None, "every /admin view needs a token"
    return Actor(principal.name, principal.role)


def saga_filter(query: dict[str, Any]) -> SagaFilter:
    return SagaFilter(statuses=tuple(query.get("status") or ()), kind=query.get("kind"),
                      failing_step=query.get("failing_step"), error=query.get("error"),
                      order_id=query.get("order_id"), customer_id=query.get("customer_id"),
                      since=query.get("since"), until=query.get("until"))


@admin.route("/whoami")
class Whoami(MethodView):
    @requires("viewer")
    @admin.response(200, WhoamiSchema)
    def get(self) -> Any:
        """The caller: its token's name and role (the console shows actions to support only)."""
        who = actor()
        return {"name": who.name, "role": who.role}


@admin.route("/definitions")
class Definitions(MethodView):
    @requires("viewer")
    @admin.response(200, DefinitionSchema(many=True))
    def get(self) -> Any:
        """Each saga kind's steps, in order, with the compensation that undoes each, and its compensations."""
        return [{"kind": d.kind, "version": d.version,
                 "steps": [{"name": s.name, "provider": s.provider, "compensation": s.compensation,
                            "best_effort": s.best_effort} for s in d.steps],
                 "compensations": [c.name for c in d.compensations]}
                for d in runtime().definitions.values()]


@admin.route("/sagas")
class Sagas(MethodView):
    @requires("viewer")
    @admin.arguments(SagaFilterSchema, location="query")
    @admin.response(200, SagaSummarySchema(many=True))
    @admin.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        """Sagas matching the filters, newest first; paging in X-Pagination."""
        page, size = pagination_parameters.page, pagination_parameters.page_size
        rows, total = saga_search.search(runtime(), saga_filter(query), (page - 1) * size, size)
        pagination_parameters.item_count = total
        return rows


@admin.route("/sagas/counts")
class SagaCounts(MethodView):
    @requires("viewer")
    @admin.arguments(SagaFilterSchema, location="query")
    @admin.response(200, CountsSchema)
    def get(self, query: dict[str, Any]) -> Any:
        """How many sagas match the filters, by status and by failing step."""
        return saga_search.counts(runtime(), saga_filter(query))


@admin.route(f"/sagas/<{ID}:saga_id>")
class SagaTimeline(MethodView):
    @requires("viewer")
    @admin.response(200, TimelineSchema)
    @admin.alt_response(404, description="No such saga")
    @admin.alt_response(410, description="The saga finished and retention moved it out (RETENTION_DAYS); its order "
                                         "and audit log stay")
    def get(self, saga_id: int) -> Any:
        """One saga: every attempt of every step, its state changes, its audit log and the actions it allows."""
        return saga_search.timeline(runtime(), saga_id)


@admin.route(f"/sagas/<{ID}:saga_id>/<{ACTION}:action>")
class SagaAction(MethodView):
    @requires("support")
    @admin.arguments(ActionSchema)
    @admin.response(200, ActionResultSchema)
    @admin.alt_response(404, description="No such saga")
    @admin.alt_response(410, description="The saga finished and retention moved it out (RETENTION_DAYS); its order "
                                         "and audit log stay")
    @admin.alt_response(409, description="The saga's state does not allow it, or another action on it is running")
    @admin.alt_response(422, description="No reason given, or an invalid step")
    def post(self, data: dict[str, Any], saga_id: int, action: str) -> Any:
        """Act on one saga. retry: run its failed step again (attempts start over, same idempotency key);
        resume: run it again from `step` (the steps before stay as they are); skip: its failed step was
        resolved by hand, the saga goes on as if it had succeeded; compensate: undo what it did, latest first;
        cancel: cancel its order."""
        return perform(runtime(), SupportAction(saga_id, Action(action), data["reason"], actor(),
                                                step=data.get("step")))


@admin.route("/bulk")
class BulkPlans(MethodView):
    @requires("support")
    @admin.arguments(BulkPlanRequestSchema)
    @admin.response(201, BulkProgressSchema)
    @admin.alt_response(409, description="Too many sagas match")
    def post(self, data: dict[str, Any]) -> Any:
        """Dry run of a bulk action: how many and which sagas it would touch (the first 100; page with
        GET /admin/bulk/<token>), and the token that runs it on exactly those."""
        plan = bulk.plan(runtime(), actor(), Action(data["action"]), data["reason"], saga_filter(data["filter"]),
                         data.get("step"))
        return {**plan.__dict__, "finished": plan.finished,
                "sagas": bulk.planned_sagas(runtime(), plan.token, 0, 100)}


@admin.route("/bulk/<bulk_token:token>")
class BulkPlan(MethodView):
    @requires("viewer")
    @admin.arguments(BulkPageQuerySchema, location="query")
    @admin.response(200, BulkProgressSchema)
    @admin.alt_response(404, description="No such plan")
    def get(self, query: dict[str, Any], token: str) -> Any:
        """A bulk plan's progress and one page of its sagas (with the state the dry run saw)."""
        progress = bulk.progress(runtime(), token)
        size = query["page_size"]
        return {**progress.__dict__, "finished": progress.finished,
                "sagas": bulk.planned_sagas(runtime(), token, (query["page"] - 1) * size, size)}


@admin.route("/bulk/<bulk_token:token>/run")
class BulkRun(MethodView):
    @requires("support")
    @admin.arguments(BulkRunSchema)
    @admin.response(200, BulkProgressSchema)
    @admin.alt_response(404, description="No such plan")
    @admin.alt_response(409, description="The plan expired")
    def post(self, data: dict[str, Any], token: str) -> Any:
        """Run the plan's next batch (each saga in its own short transaction; one still in the state the dry run
        saw is acted on, any other is skipped and logged); call again until `finished`."""
        progress, results = bulk.run_batch(runtime(), token, actor(), data["batch_size"])
        return {**progress.__dict__, "finished": progress.finished, "results": results}


@admin.route("/audit")
class Audit(MethodView):
    @requires("viewer")
    @admin.arguments(AuditQuerySchema, location="query")
    @admin.response(200, AuditEntrySchema(many=True))
    @admin.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        """The audit log, newest first: every support action, done or refused. Read-only."""
        page, size = pagination_parameters.page, pagination_parameters.page_size
        rows, total = saga_search.audit_page(runtime(), query.get("saga_id"), query.get("bulk_token"),
                                             (page - 1) * size, size)
        pagination_parameters.item_count = total
        return rows
