"""Headers every answer carries: no content sniffing, no framing, no referrer; the JSON and text answers also a
content security policy that allows nothing (the console sets its own; the /docs page loads Swagger UI). And the
bounds on request bodies: their size, and JSON only."""
from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import UnsupportedMediaType

DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DATA_TYPES = frozenset({"application/json", "application/problem+json", "text/plain"})


def secure_responses(app: Flask) -> None:
    app.after_request(_secure)


def _secure(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype in DATA_TYPES:
        headers.setdefault("Content-Security-Policy", DATA_CSP)
    return response


def bound_request_bodies(app: Flask, max_bytes: int) -> None:
    """A body over max_bytes answers 413 before it is read (werkzeug checks the Content-Length, and stops a
    streamed body at the limit); a body that is not JSON answers 415."""
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.before_request(_json_bodies_only)


def _json_bodies_only() -> None:
    has_body = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if has_body and not request.is_json:
        raise UnsupportedMediaType(f"the body must be JSON (Content-Type: application/json), not "
                                   f"{request.mimetype or 'untyped'}")
