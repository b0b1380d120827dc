"""Headers every answer carries: no content sniffing, no framing, no referrer; the JSON and text answers also a
content security policy that allows nothing (the console sets its own; the /docs page loads Swagger UI). And the
bounds on request bodies: their size, JSON only, and how deeply it nests."""
from __future__ import annotations

import re

from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DATA_TYPES = frozenset({"application/json", "application/problem+json", "text/plain"})
# Our deepest body is 3 levels (a bulk plan's filter holds a list); Python's json recurses per level and fails
# with a RecursionError (a 500) somewhere near 1,000.
MAX_JSON_DEPTH = 32
# A JSON string (skipped whole, so brackets inside it do not count) or a bracket; possessive, so a string left
# open cannot make the scan backtrack.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_OPENING = frozenset(b"[{")


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
    streamed body at the limit); a body that is not JSON answers 415; JSON nested deeper than MAX_JSON_DEPTH
    answers 400 before any parser recurses into it."""
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.before_request(_json_bodies_only)


def _json_bodies_only() -> None:
    has_body = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if has_body and not request.is_json:
        raise UnsupportedMediaType(f"the body must be JSON (Content-Type: application/json), not "
                                   f"{request.mimetype or 'untyped'}")
    if has_body and nests_too_deep(request.get_data(cache=True)):
        raise BadRequest(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels of arrays and objects")


def nests_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays and objects nest deeper than `limit` in a JSON text: one scan, no recursion, stopping at the
    first bracket past the limit; brackets inside strings do not count. A body with few brackets is not scanned."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if len(token) == 1:  # a bracket; a string is at least its two quotes
            depth += 1 if token[0] in _OPENING else -1
            if depth > limit:
                return True
    return False
