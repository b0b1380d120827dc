"""CORS for the storefront's own web origins only (CORS_ORIGINS, none by default: then no answer carries a CORS
header and browsers keep other sites' pages from reading the API).

A listed origin may call the storefront endpoints (orders, sagas, books, customers' orders, notifications) with
GET and POST and the headers the API reads; a preflight from it is answered with those, and the answers let its
scripts read the headers they need (Location, Retry-After...). Any other origin gets no CORS header at all. The
support routes (/admin, /metrics, the console) are never opened to other origins.
"""
from __future__ import annotations

from flask import Flask
from flask_cors import CORS

STOREFRONT_PATHS = r"^/(orders|sagas|books|customers|notifications)(/.*)?$"
METHODS = ["GET", "POST"]
REQUEST_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Prefer", "X-Request-ID"]
EXPOSED_HEADERS = ["Location", "Retry-After", "X-Request-ID", "Idempotent-Replayed", "Preference-Applied",
                   "X-Pagination"]
MAX_AGE_S = 600


def allow_origins(app: Flask, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    CORS(app, resources={STOREFRONT_PATHS: {}}, origins=list(origins), methods=METHODS,
         allow_headers=REQUEST_HEADERS, expose_headers=EXPOSED_HEADERS, max_age=MAX_AGE_S,
         supports_credentials=False, vary_header=True)
