"""HTTP views: load input with a schema, call one service function, dump the answer."""
from __future__ import annotations

import re
import time
from typing import Any

from flask import current_app, request, url_for
from flask.views import MethodView

from api.auth import current_principal, public, requires
from api.paging import Blueprint
from api.problems import problem
from api.schemas import (
    INT32_MAX,
    BookSchema,
    CancelSchema,
    CustomerOrderSchema,
    HealthSchema,
    NotificationQuerySchema,
    NotificationSchema,
    OrderCreateSchema,
    OrderSchema,
    ReadySchema,
    SagaSchema,
    cents,
    with_amount,
)
from domain.model import OrderStatus
from services import orders as service
from services.cancellation import CancelOrder as CancelRequest
from services.cancellation import cancel_order
from services.health import Readiness, check_health, down
from services.runtime import Runtime

ID = f"int(max={INT32_MAX})"
MAX_WAIT_S = 30
# An Idempotency-Key is 1 to 200 visible ASCII characters (a UUID, a ULID, a client's order number).
MAX_IDEMPOTENCY_KEY = 200
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[!-~]{1,200}")
IDEMPOTENCY_KEY_RULE = "1 to 200 visible ASCII characters (no spaces or control characters)"
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY,
                              "pattern": "^[!-~]{1,200}$"},
                   "description": f"Your key for this order ({IDEMPOTENCY_KEY_RULE}): a POST retried by the same "
                                  "token with the same key and body answers the same order (Idempotent-Replayed: "
                                  "true); the same key with another body answers 409; another token's keys are its "
                                  "own; kept IDEMPOTENCY_KEY_TTL_S (24 h)"}
PREFER = {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"}, "example": "wait=10",
          "description": f"`wait=N`: wait up to N seconds for the payment outcome before answering (RFC 7240); "
                         f"more than {MAX_WAIT_S} is clamped to {MAX_WAIT_S}; other preferences are ignored"}
LOCATION = {"description": "The order's URL", "required": True, "schema": {"type": "string"}}
REPLAYED = {"description": "`true` when an earlier POST with this Idempotency-Key placed the order",
            "schema": {"type": "string", "enum": ["true"]}}
APPLIED = {"description": "The wait applied, e.g. `wait=10`", "required": True, "schema": {"type": "string"}}
PLACED = {"Location": LOCATION, "Idempotent-Replayed": REPLAYED,
          "Preference-Applied": {**APPLIED, "required": False}}
SETTLED = {"Location": LOCATION, "Idempotent-Replayed": REPLAYED, "Preference-Applied": APPLIED}
blp = Blueprint("orders", __name__, description="Book orders, their sagas, the catalog and read models")


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["bookmarket"]
    return rt


def order_body(view: service.OrderView) -> dict[str, Any]:
    order = view.order
    return {
        "id": order.id, "customer_id": order.customer_id, "book_id": order.book_id, "title": view.title,
        "qty": order.qty, "amount": cents(order.amount_cents), "amount_cents": order.amount_cents,
        "status": order.status.value, "reason": order.reason, "saga_id": view.saga_id, "sagas": view.sagas,
        "needs_support": any(s["status"] == "FAILED" for s in view.sagas),
        "created_at": order.created_at, "updated_at": order.updated_at,
    }


def caller() -> str:
    """The name of the token calling: the scope of its Idempotency-Keys."""
    principal = current_principal()
    return principal.name if principal is not None else ""


def requested_wait() -> float | None:
    """Seconds from a `Prefer: wait=N` header, or None; a larger N is clamped to MAX_WAIT_S (30), and the
    Preference-Applied header says the wait applied."""
    match = re.search(r"(?:^|[,;\s])wait\s*=\s*(\d+)", request.headers.get("Prefer", ""))
    return min(float(match.group(1)), MAX_WAIT_S) if match else None


@blp.route("/orders")
class Orders(MethodView):
    @requires("storefront")
    @blp.arguments(OrderCreateSchema)
    @blp.doc(parameters=[IDEMPOTENCY_KEY, PREFER])
    @blp.response(202, OrderSchema, description="Accepted: the saga runs; poll the Location", headers=PLACED)
    @blp.alt_response(201, schema=OrderSchema, description="With `Prefer: wait=N`: paid within N seconds",
                      headers=SETTLED)
    @blp.alt_response(200, schema=OrderSchema, headers=SETTLED,
                      description="With `Prefer: wait=N`: the order ended otherwise within N seconds (cancelled, "
                                  "e.g. refunded after a delivery refusal): the order as it is")
    @blp.alt_response(402, description="With `Prefer: wait=N`: payment declined or failed, the order REJECTED "
                                        "(problem+json with the order in `order`)", headers=SETTLED)
    @blp.alt_response(409, description="Idempotency-Key reused by the same caller for a different order")
    @blp.alt_response(422, description="Invalid input (or a malformed Idempotency-Key); the problem names the "
                                        "field")
    @blp.alt_response(429, description="Too many orders from this token or client address "
                                        "(RATE_LIMIT_ORDERS_PER_TOKEN, RATE_LIMIT_ORDERS_PER_ADDRESS); see Retry-After")
    @blp.alt_response(503, description="Temporarily unable to take orders (overloaded, or the database is down); "
                                        "see Retry-After")
    def post(self, data: dict[str, Any]) -> Any:
        """Place an order. Headers: `Idempotency-Key` (1 to 200 visible ASCII characters: a retried POST from the
        same token returns the same order; another token's keys are its own; kept IDEMPOTENCY_KEY_TTL_S, 24 h),
        `Prefer: wait=N` (wait up to N seconds for the payment outcome; more than 30 is clamped to 30)."""
        key = request.headers.get("Idempotency-Key")  # present but empty is malformed, not absent
        if key is not None and not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
            return problem(422, "Unprocessable Entity", f"Idempotency-Key: {IDEMPOTENCY_KEY_RULE}",
                           errors={"Idempotency-Key": [IDEMPOTENCY_KEY_RULE]})
        rt, admission = runtime(), current_app.extensions["bookmarket.admission"]
        started = time.monotonic()
        command = service.PlaceOrder(idempotency_key=key, caller=caller(), **data)
        placed = service.place_order(rt, command, lambda: admission.check(rt))
        if placed.created:
            admission.accepted(time.monotonic() - started)
        return self._answer(placed)

    def _answer(self, placed: service.PlacedOrder) -> Any:
        assert placed.order.id is not None
        location = url_for("orders.OrderById", order_id=placed.order.id)
        headers = {"Location": location}
        if not placed.created:
            headers["Idempotent-Replayed"] = "true"
        wait = requested_wait()
        if wait is None:
            return order_body(placed.view), 202, headers
        view = service.wait_for_payment(runtime(), placed.order.id, wait)
        headers["Preference-Applied"] = f"wait={wait:g}"
        return self._settled(view, headers)

    def _settled(self, view: service.OrderView, headers: dict[str, str]) -> Any:
        """402 only when the payment failed (the order is REJECTED); any other ending is the order as it is."""
        status = view.order.status
        if status is OrderStatus.REJECTED:
            body = OrderSchema().dump(order_body(view))
            return problem(402, "Payment Required", f"order {view.order.id} was rejected: "
                           f"{view.order.reason or 'payment failed'}", headers, order=body)
        codes = {OrderStatus.PENDING: 202, OrderStatus.CANCELLED: 200}
        return order_body(view), codes.get(status, 201), headers


@blp.route(f"/orders/<{ID}:order_id>")
class OrderById(MethodView):
    @requires("storefront")
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, description="No such order")
    def get(self, order_id: int) -> Any:
        """An order and its current status."""
        return order_body(service.get_order(runtime(), order_id))


@blp.route(f"/orders/<{ID}:order_id>/cancel")
class CancelOrder(MethodView):
    @requires("storefront")
    @blp.arguments(CancelSchema, required=False)
    @blp.response(202, OrderSchema, description="Cancel recorded; the order ends CANCELLED",
                  headers={"Location": LOCATION})
    @blp.alt_response(404, description="No such order")
    @blp.alt_response(409, description="The order was rejected, or its saga is parked for support")
    def post(self, data: dict[str, Any], order_id: int) -> Any:
        """Cancel an order: a running saga stops at its next step boundary and undoes what it did; a completed
        one is undone by a cancel saga (cancel delivery, refund, notify). Repeating a cancel changes nothing."""
        view = cancel_order(runtime(), CancelRequest(order_id, data.get("reason")))
        return order_body(view), 202, {"Location": url_for("orders.OrderById", order_id=order_id)}


@blp.route(f"/sagas/<{ID}:saga_id>")
class SagaById(MethodView):
    @requires("storefront")
    @blp.response(200, SagaSchema)
    @blp.alt_response(404, description="No such saga")
    @blp.alt_response(410, description="The saga finished and retention moved it out (RETENTION_DAYS); its order "
                                       "still lists it")
    def get(self, saga_id: int) -> Any:
        """A saga with its steps in order: status, attempts, error and times of each."""
        view = service.get_saga(runtime(), saga_id)
        return {**dict(view.saga._mapping), "steps": [dict(s._mapping) for s in view.steps]}


@blp.route("/books")
class Books(MethodView):
    @requires("storefront")
    @blp.response(200, BookSchema(many=True))
    def get(self) -> Any:
        """The catalog."""
        return [{"id": b.id, "title": b.title, "price": cents(b.price_cents), "price_cents": b.price_cents}
                for b in service.list_books(runtime())]


@blp.route(f"/customers/<{ID}:customer_id>/orders")
class CustomerOrders(MethodView):
    @requires("storefront")
    @blp.response(200, CustomerOrderSchema(many=True))
    @blp.paginate()
    def get(self, customer_id: int, pagination_parameters: Any) -> Any:
        """A customer's orders, newest first (a read model the saga keeps current). Paging in X-Pagination."""
        rows, total = service.customer_orders(runtime(), customer_id, pagination_parameters.page,
                                              pagination_parameters.page_size)
        pagination_parameters.item_count = total
        return [with_amount(r) for r in rows]


@blp.route("/notifications")
class Notifications(MethodView):
    @requires("storefront")
    @blp.arguments(NotificationQuerySchema, location="query")
    @blp.response(200, NotificationSchema(many=True))
    @blp.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        """Messages sent to customers and their status (a read model), newest first."""
        rows, total = service.notifications(runtime(), query.get("customer_id"), pagination_parameters.page,
                                            pagination_parameters.page_size)
        pagination_parameters.item_count = total
        return [dict(r._mapping) for r in rows]


@blp.route("/health")
class Health(MethodView):
    @public
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A dependency is down")
    def get(self) -> Any:
        """Readiness: the database and the broker answer."""
        report = check_health(runtime())
        return report, (200 if report["status"] == "ok" else 503)


@blp.route("/health/live")
class Liveness(MethodView):
    @public
    @blp.response(200, HealthSchema)
    def get(self) -> Any:
        """Liveness: the process serves HTTP (dependencies are not checked; see /health for readiness)."""
        return {"status": "ok"}


@blp.route("/healthz")
class Alive(MethodView):
    @public
    @blp.response(200, HealthSchema)
    def get(self) -> Any:
        """Liveness for a probe: the process answers HTTP; no dependency is checked (a database outage must not
        restart the API)."""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @public
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, description="The database or the broker did not answer within READINESS_TIMEOUT_S "
                                        "(problem+json naming them, with `checks`)")
    def get(self) -> Any:
        """Readiness for a probe: the database answers a statement and the broker a PING, each within
        READINESS_TIMEOUT_S (1 s), so the probe never hangs."""
        readiness: Readiness = current_app.extensions["bookmarket.readiness"]
        checks = readiness.check()
        failed = down(checks)
        if not failed:
            return {"status": "ok", "checks": checks}
        detail = "; ".join(f"{name}: {checks[name]}" for name in failed)
        return problem(503, "Service Unavailable", f"not ready: {detail}", checks=checks)
