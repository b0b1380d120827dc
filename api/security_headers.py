"""Headers every answer carries: no content sniffing, no framing, no referrer; the JSON and text answers also a
content security policy that allows nothing (the console sets its own; the /docs page loads Swagger UI). And the
bounds on request bodies: their size, JSON only, how deeply it nests and how long its numbers are."""
from __future__ import annotations

import re
import sys

from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

DATA_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DATA_TYPES = frozenset({"application/json", "application/problem+json", "text/plain"})
# Our deepest body is 3 levels (a bulk plan's filter holds a list); Python's json recurses per level and fails
# with a RecursionError (a 500) somewhere near 1,000.
MAX_JSON_DEPTH = 32
# Python refuses to read an integer of more digits than this (a ValueError, not a JSON error: a 500), 4300 unless
# PYTHONINTMAXSTRDIGITS says otherwise (0, no limit, keeps 4300: reading a longer one costs quadratic time); our
# largest is 10.
MAX_JSON_DIGITS = sys.get_int_max_str_digits() or 4300
# A JSON string (skipped whole, so brackets and digits inside it do not count), a bracket, or a run of digits;
# possessive, so a string left open cannot make the scan backtrack.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]|[0-9]++')
_OPENING, _CLOSING, _QUOTE = frozenset(b"[{"), frozenset(b"]}"), ord('"')


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
    streamed body at the limit); a body that is not JSON answers 415; JSON nested deeper than MAX_JSON_DEPTH, or
    with a number longer than MAX_JSON_DIGITS, answers 400 before any parser reads it."""
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.before_request(_json_bodies_only)


def _json_bodies_only() -> None:
    has_body = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if has_body and not request.is_json:
        raise UnsupportedMediaType(f"the body must be JSON (Content-Type: application/json), not "
                                   f"{request.mimetype or 'untyped'}")
    if has_body:
        problem = json_shape_problem(request.get_data(cache=True))
        if problem:
            raise BadRequest(problem)


def json_shape_problem(body: bytes, depth: int = MAX_JSON_DEPTH, digits: int = MAX_JSON_DIGITS) -> str | None:
    """What in a JSON text Python's parser would fail on with something other than a JSON error, or None: arrays
    and objects nested deeper than `depth`, a number of more than `digits` digits. One scan, no recursion, stopping
    at the first; brackets and digits inside strings do not count. A short body with few brackets is not scanned."""
    if body.count(b"[") + body.count(b"{") <= depth and len(body) <= digits:
        return None
    level = 0
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if token[0] in _OPENING:
            level += 1
            if level > depth:
                return f"the JSON body nests deeper than {depth} levels of arrays and objects"
        elif token[0] in _CLOSING:
            level -= 1
        elif token[0] != _QUOTE and len(token) > digits:
            return f"the JSON body holds a number of more than {digits} digits"
    return None
