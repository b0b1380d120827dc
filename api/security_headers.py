"""Headers every answer carries: no content sniffing, no framing, no referrer; the JSON and text answers also a
content security policy that allows nothing (the console sets its own; the /docs page loads Swagger UI)."""
from __future__ import annotations

from flask import Flask, Response

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
