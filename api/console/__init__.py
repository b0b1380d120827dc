"""The support console: a static page at /console that uses the /admin API from the browser with a bearer token
the person types in (kept in sessionStorage only). The page and its files are open; the data is not."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from api.auth import public

STATIC = Path(__file__).resolve().parent / "static"
# No inline script or style, nothing from elsewhere, not framed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

console = Blueprint("console", __name__, url_prefix="/console")


@console.after_request
def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


@console.get("")
@console.get("/")
@public
def index() -> Response:
    """The console's page."""
    return send_from_directory(STATIC, "index.html")


@console.get("/static/<path:name>")
@public
def static_file(name: str) -> Response:
    """The console's scripts and styles."""
    return send_from_directory(STATIC, name)
