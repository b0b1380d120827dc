"""Every error leaves the API as application/problem+json (RFC 9457) with a clear title and detail."""
from __future__ import annotations

import logging
import math
from typing import Any

import sqlalchemy.exc
from flask import Flask, Response, json
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from domain.errors import (
    DomainError,
    IdempotencyConflict,
    InvalidQuantity,
    InvalidTransition,
    NotFound,
    Overloaded,
    SagaArchived,
    SagaNeedsSupport,
    UnknownBook,
)
from services.bulk import BulkPlanExpired
from services.support import ActionRefused

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> Response:
    """A problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def field_problem(field: str, message: str) -> Response:
    return problem(422, "Unprocessable Entity", f"{field}: {message}", errors={field: [message]})


class ProblemApi(Api):  # type: ignore[misc]
    """flask-smorest's Api, answering its errors as problem+json and keeping the 405's Allow header. The error
    responses it documents are api/contract.py's (problem+json), not its own `{code, message}`."""

    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_responses(self) -> None:
        """Register none of flask-smorest's error responses (and so not its Error schema): api/contract.py
        documents each error an operation can answer."""

    def handle_http_exception(self, error: HTTPException) -> Response:
        status = error.code or 500
        headers = dict(error.get_headers())
        headers.pop("Content-Type", None)
        messages = (getattr(error, "data", None) or {}).get("messages")
        errors = _flatten(messages) if isinstance(messages, dict) and messages else None
        if errors and set(errors) == {"_"}:  # a message about the whole body, not a field
            detail, errors = _detail(errors).removeprefix("_: "), None
            return problem(status, error.name, detail, headers)
        detail = _detail(errors) if errors else (error.description or "")
        extra = {"errors": errors} if errors else {}
        return problem(status, error.name, detail, headers, **extra)


def _flatten(messages: dict[str, Any]) -> dict[str, Any]:
    """webargs nests errors by location (json, query, headers); clients want them by field, a nested one by its
    dotted path (filter.kind, status.0)."""
    flat: dict[str, Any] = {}
    for location in messages.values():
        flat.update(_by_path(location) if isinstance(location, dict) else {"_": location})
    return flat


def _by_path(errors: dict[Any, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for field, messages in errors.items():
        path = f"{prefix}{field}"
        flat.update(_by_path(messages, f"{path}.") if isinstance(messages, dict) else {path: messages})
    return flat


def _detail(errors: dict[str, Any]) -> str:
    parts = []
    for field, messages in errors.items():
        text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else str(messages)
        parts.append(f"{field}: {text}")
    return ", ".join(parts)


def register_problem_handlers(app: Flask) -> None:
    """Domain errors and outages become problems; nothing leaves as an HTML 500."""
    app.register_error_handler(UnknownBook, lambda e: field_problem("book_id", str(e)))
    app.register_error_handler(InvalidQuantity, lambda e: field_problem("qty", str(e)))
    app.register_error_handler(NotFound, lambda e: problem(404, "Not Found", str(e)))
    app.register_error_handler(SagaArchived, _archived)
    app.register_error_handler(IdempotencyConflict, lambda e: problem(409, "Conflict", str(e)))
    app.register_error_handler(InvalidTransition, lambda e: problem(409, "Conflict", str(e)))
    app.register_error_handler(SagaNeedsSupport, lambda e: problem(409, "Conflict", str(e)))
    app.register_error_handler(ActionRefused, _refused)
    app.register_error_handler(BulkPlanExpired, lambda e: problem(409, "Conflict", str(e)))
    app.register_error_handler(Overloaded, _overloaded)
    app.register_error_handler(DomainError, lambda e: problem(422, "Unprocessable Entity", str(e)))
    app.register_error_handler(sqlalchemy.exc.OperationalError, _database_down)
    app.register_error_handler(sqlalchemy.exc.InterfaceError, _database_down)
    app.register_error_handler(Exception, _unexpected)


def _refused(error: ActionRefused) -> Response:
    extra: dict[str, object] = {"saga_id": error.saga_id, "state": error.state} if error.saga_id else {}
    return problem(409, "Conflict", str(error), None, **extra)


def _archived(error: SagaArchived) -> Response:
    return problem(410, "Gone", str(error), None, saga_id=error.saga_id, saga_status=error.status,
                   order_id=error.order_id, archived_at=error.archived_at, steps_kept=error.steps_kept)


def _overloaded(error: Overloaded) -> Response:
    retry_after = str(max(1, math.ceil(error.retry_after_s)))
    return problem(503, "Service Unavailable", str(error), {"Retry-After": retry_after})


def _database_down(error: Exception) -> Response:
    log.warning("database unavailable: %s", error)
    return problem(503, "Service Unavailable", "the database cannot be reached; try again shortly",
                   {"Retry-After": "5"})


def _unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return problem(error.code or 500, error.name, error.description or "")
    log.exception("unexpected error")
    return problem(500, "Internal Server Error", "an unexpected error occurred; it has been logged")
