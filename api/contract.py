"""The OpenAPI document tells the truth: every operation lists the statuses it can answer, each error as the
problem+json api/problems.py sends, with the headers that come with it, and the headers every request may carry.

flask-smorest documents what a view declares; what the app around the views adds (X-Request-ID on every answer, the
body checks of api/security_headers.py, the 404 of an id out of range, the 503 of a database outage) is added here,
by an apispec plugin that sees each operation as it is registered.
"""
from __future__ import annotations

from http import HTTPStatus
from typing import Any

from apispec import BasePlugin

from infra.logs import MAX_REQUEST_ID, REQUEST_ID_HEADER

PROBLEM = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
METHODS = frozenset({"get", "put", "post", "delete", "patch"})
# Probes answer on their own when the database is down (/health and /readyz say so in their body).
NO_DATABASE = frozenset({"/health", "/health/live", "/healthz", "/readyz"})
# 503s without Retry-After: /readyz's answer is for a probe, which polls anyway.
NO_RETRY_AFTER = frozenset({"/readyz"})
# flask-smorest's own error responses, which would document a `{code, message}` body that is never sent.
SMOREST_ERRORS = {"UNPROCESSABLE_ENTITY": 422, "DEFAULT_ERROR": None}

REQUEST_ID_PARAMETER = {
    "name": REQUEST_ID_HEADER, "in": "header", "required": False,
    "description": f"Your id for this request (printable, at most {MAX_REQUEST_ID} characters, no quote or "
                   "backslash), logged with everything it causes and echoed back; otherwise the API makes one",
    "schema": {"type": "string"},
}
REQUEST_ID_HEADER_DOC = {"description": "This request's id: the X-Request-ID sent, when sensible, or a new one",
                         "required": True, "schema": {"type": "string"}}
RETRY_AFTER = {"description": "Seconds to wait before trying again", "required": True,
               "schema": {"type": "string", "pattern": "^[0-9]+$"}}
# flask-smorest documents X-Pagination with a schema: an object in the header's simple style (`total,3,page,1`).
# It sends JSON: a header with content.
PAGINATION_HEADER = "X-Pagination"
PAGINATION = {"description": "The paging, as JSON", "required": True,
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaginationMetadata"}}}}
BODY_ERRORS = {
    400: "The body is not valid JSON",
    413: "The body is larger than MAX_BODY_BYTES",
    415: "The body is not JSON (Content-Type: application/json)",
    422: "Invalid input; the problem names the field in `errors`",
}


def problem_response(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    """An error answer as the API sends it: problem+json, with the request id and any other `headers`."""
    return {"description": description, "content": {PROBLEM: {"schema": PROBLEM_REF}},
            "headers": {REQUEST_ID_HEADER: REQUEST_ID_HEADER_DOC, **headers}}


class ContractPlugin(BasePlugin):  # type: ignore[misc]
    """Completes each operation as it is registered (after the marshmallow plugin has resolved its schemas)."""

    def operation_helper(self, path: str | None = None, operations: dict[str, Any] | None = None,
                         **_kwargs: Any) -> None:
        for method, operation in (operations or {}).items():
            if method in METHODS:
                complete(path or "", operation)


def complete(path: str, operation: dict[str, Any]) -> None:
    """Add what the app answers around the view: the request id, the body and path errors, the outage."""
    operation.setdefault("parameters", []).append(dict(REQUEST_ID_PARAMETER))
    responses = {str(code): response for code, response in operation.get("responses", {}).items()}
    operation["responses"] = responses
    for name, status in SMOREST_ERRORS.items():
        for code in [c for c, r in responses.items() if r == name]:
            del responses[code]
            if status is not None:
                responses[str(status)] = problem_response(BODY_ERRORS[status])
    if "requestBody" in operation:
        for status, description in BODY_ERRORS.items():
            responses.setdefault(str(status), problem_response(description))
    else:  # the body checks come before routing: a body sent where none is taken is held to them too
        for status in (413, 415):
            responses.setdefault(str(status), problem_response(f"{BODY_ERRORS[status]} (this operation takes none)"))
    if any(p.get("in") == "query" for p in operation["parameters"] if isinstance(p, dict)):
        responses.setdefault("422", problem_response("An invalid query parameter; `errors` names it"))
    if "{" in path:
        responses.setdefault("404", problem_response("No such resource, or an id out of range"))
    if path not in NO_DATABASE:
        responses.setdefault("503", problem_response("The database cannot be reached; try again after Retry-After"))
    for code, response in responses.items():
        _complete_response(path, int(code), response)


def _complete_response(path: str, status: int, response: Any) -> None:
    if not isinstance(response, dict):  # a reference to a component response (401, 403): completed there
        return
    headers = response.setdefault("headers", {})
    headers.setdefault(REQUEST_ID_HEADER, REQUEST_ID_HEADER_DOC)
    if headers.get(PAGINATION_HEADER) == "PAGINATION":
        headers[PAGINATION_HEADER] = PAGINATION
    if status >= 400 and "content" not in response:
        response["content"] = {PROBLEM: {"schema": PROBLEM_REF}}
    if (status == 429 or (status == 503 and PROBLEM in response["content"] and path not in NO_RETRY_AFTER)):
        headers.setdefault("Retry-After", RETRY_AFTER)
    response.setdefault("description", HTTPStatus(status).phrase)
