"""The sandbox Flask app faking the payment, delivery and messaging providers."""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sandbox.behavior import PROVIDERS, validate_changes
from sandbox.calls import idempotency_key, read_fields, read_json_object
from sandbox.journal import Journal
from sandbox.operations import OPERATIONS, Call, Operation, rejection, unavailable
from sandbox.problems import JSON, Answer, Problem, bad_request
from sandbox.state import SandboxState

MAX_BODY_BYTES = 1 << 20

_PROVIDER = f"<any({', '.join(PROVIDERS)}):provider>"


def _respond(answer: Answer) -> Response:
    """Render an answer as a JSON (or problem+json) response."""
    mimetype = "application/problem+json" if answer.problem else "application/json"
    return Response(json.dumps(answer.body), status=answer.status, mimetype=mimetype)


def _ok(body: JSON | list[JSON]) -> Response:
    """Render a 200 JSON response."""
    return Response(json.dumps(body), status=200, mimetype="application/json")


def _sleep_ms(milliseconds: int) -> None:
    """Sleep for a number of milliseconds."""
    if milliseconds > 0:
        time.sleep(milliseconds / 1000)


def _happens(probability: float) -> bool:
    """Draw whether an event of this probability happens."""
    return random.random() < probability


def _handle_call(state: SandboxState, operation: Operation) -> Response:
    """Answer one provider call: latency, outages, idempotency, rejection, effect, lost response."""
    key = idempotency_key(request)
    data = read_fields(read_json_object(request), operation.fields)
    behavior = state.behavior(operation.provider)
    _sleep_ms(random.randint(*behavior["latency_ms"]))
    if behavior["down"]:
        raise unavailable(operation.provider, "down")
    if _happens(behavior["error_rate"]):
        raise unavailable(operation.provider, "failing transiently (error_rate)")
    refusal = rejection(operation.provider) if behavior["reject"] else None
    call = Call(key, data, behavior)
    answer, performed = state.perform(
        operation.provider, operation.name, key, refusal, lambda book: operation.effect(book, call)
    )
    if performed and _happens(behavior["lose_response"]):
        _sleep_ms(behavior["hang_ms"])
    return _respond(answer)


def _call_view(state: SandboxState, operation: Operation) -> Callable[[], Response]:
    """Return the view function of one provider operation."""
    return lambda: _handle_call(state, operation)


def _register_operations(app: Flask, state: SandboxState) -> None:
    """Register `POST /<provider>/<operation>` for every provider operation."""
    for operation in OPERATIONS:
        app.add_url_rule(
            f"/{operation.provider}/{operation.name}",
            endpoint=f"{operation.provider}_{operation.name}",
            view_func=_call_view(state, operation),
            methods=["POST"],
        )


def _register_controls(app: Flask, state: SandboxState) -> None:
    """Register the health, reset, behaviour and ledger endpoints."""

    @app.get("/health")
    def health() -> Response:
        """Tell that the sandbox is up."""
        return _ok({"status": "ok"})

    @app.post("/reset")
    def reset() -> Response:
        """Restore default behaviours; `?ledgers=true` also forgets every ledger and idempotency record for good."""
        state.reset(ledgers=_flag_argument("ledgers"))
        return Response(status=204)

    @app.get(f"/{_PROVIDER}/behavior")
    def get_behavior(provider: str) -> Response:
        """Return a provider's current behaviour."""
        return _ok(state.behavior(provider))

    @app.put(f"/{_PROVIDER}/behavior")
    def put_behavior(provider: str) -> Response:
        """Merge changes into a provider's behaviour and return the full behaviour."""
        changes = validate_changes(provider, read_json_object(request))
        return _ok(state.update_behavior(provider, changes))

    @app.get(f"/{_PROVIDER}/ledger")
    def ledger(provider: str) -> Response:
        """Return a provider's ledger in recording order."""
        return _ok(state.ledger(provider))


def _flag_argument(name: str) -> bool:
    """Read an optional true/false query argument, or raise a 400 problem."""
    value = request.args.get(name, "false").lower()
    if value not in ("true", "false"):
        raise bad_request("invalid-argument", "Invalid argument", f"{name} must be true or false")
    return value == "true"


def _slug(name: str) -> str:
    """Turn an HTTP status phrase into a problem type slug."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _http_problem(error: HTTPException) -> Response:
    """Render a werkzeug HTTP error (404, 405, 413, ...) as problem+json, keeping its headers."""
    response = error.get_response()
    status = error.code or 500
    problem = Problem(status, _slug(error.name), error.name, error.description or error.name)
    response.set_data(json.dumps(problem.body))
    response.mimetype = "application/problem+json"
    return response


def _register_error_handlers(app: Flask) -> None:
    """Answer every error as application/problem+json."""
    app.register_error_handler(Problem, lambda problem: _respond(problem.answer()))
    app.register_error_handler(HTTPException, _http_problem)

    @app.errorhandler(Exception)
    def internal_error(error: Exception) -> Response:
        """Log an unexpected error and answer a 500 problem."""
        app.logger.exception("sandbox internal error", exc_info=error)
        problem = Problem(500, "internal-error", "Internal Server Error", "unexpected sandbox error")
        return _respond(problem.answer())


def create_app(data_dir: str | os.PathLike[str] | None = None) -> Flask:
    """Build the sandbox app; its ledgers are kept in `data_dir` (see sandbox.journal), or in memory only."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    state = SandboxState(Journal(data_dir))
    app.extensions["sandbox_state"] = state
    _register_operations(app, state)
    _register_controls(app, state)
    _register_error_handlers(app)
    return app
