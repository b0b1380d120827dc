"""The API's documentation page at /docs: Swagger UI from the pinned swagger-ui-bundle package, served by the API
itself, so it works offline and behind a strict content security policy (nothing from elsewhere, no inline
script or style). It reads /openapi.json; the page and its files are open, the operations it tries are not."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]
from werkzeug.exceptions import NotFound

from api.auth import public

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER_UI = Path(swagger_ui_path)
# The files of Swagger UI the page loads (not its source maps, examples or other bundles).
SWAGGER_UI_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})
# Scripts, styles and the OpenAPI from this origin only; Swagger UI's icons are data: SVGs.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")

docs = Blueprint("docs", __name__, url_prefix="/docs")


@docs.after_request
def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@docs.get("")
@docs.get("/")
@public
def index() -> Response:
    """The documentation page."""
    return send_from_directory(STATIC, "index.html")


@docs.get("/static/<path:name>")
@public
def static_file(name: str) -> Response:
    """The page's own script."""
    return send_from_directory(STATIC, name)


@docs.get("/swagger-ui/<name>")
@public
def swagger_ui(name: str) -> Response:
    """Swagger UI's script, style and icons, from the installed swagger-ui-bundle."""
    if name not in SWAGGER_UI_FILES:
        raise NotFound(f"no such Swagger UI file: {name}")
    return send_from_directory(SWAGGER_UI, name)
