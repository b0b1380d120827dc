"""The console's page: open, served with a strict Content-Security-Policy, no inline script or style; the two small
/admin endpoints it reads (whoami, definitions)."""
from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from api.app import create_app
from api.console import CSP
from tests.support import api_client
from tests.unit.engine_fakes import Engine, engine_fixture


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from engine_fixture(tmp_path, request)


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    return create_app(engine.rt.settings, runtime=engine.rt).test_client()


class Inline(HTMLParser):
    """Collects what a strict CSP would block: scripts without src, on* handlers, style attributes and elements."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            if not names.get("src"):
                self.found.append("<script> without src")
            else:
                self.scripts.append(names["src"] or "")
        if tag == "style":
            self.found.append("<style>")
        if tag == "link" and names.get("rel") == "stylesheet":
            self.styles.append(names.get("href") or "")
        self.found += [f"<{tag} {name}>" for name in names if name.startswith("on") or name == "style"]


def test_the_page_is_open_strict_and_has_no_inline_script_or_style(client: FlaskClient) -> None:
    for path in ("/console", "/console/"):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "text/html"
        assert response.headers["Content-Security-Policy"] == CSP
        assert "frame-ancestors 'none'" in CSP and "script-src 'self';" in CSP
    parser = Inline()
    parser.feed(client.get("/console").get_data(as_text=True))
    assert parser.found == []
    assert parser.scripts == ["/console/static/console.js"] and parser.styles == ["/console/static/console.css"]
    for asset, mimetype in (("console.js", "javascript"), ("console.css", "text/css")):
        answer = client.get(f"/console/static/{asset}")
        assert answer.status_code == 200 and mimetype in answer.mimetype
        assert answer.headers["Content-Security-Policy"] == CSP
        assert "http://" not in answer.get_data(as_text=True) and "https://" not in answer.get_data(as_text=True)
    assert client.get("/console/static/nope.js").status_code == 404
    assert client.get("/console/static/../__init__.py").status_code == 404


def test_whoami_and_definitions_need_a_reading_role(engine: Engine) -> None:
    app = create_app(engine.rt.settings, runtime=engine.rt)
    support, viewer, storefront = (api_client(app, r) for r in ("support", "viewer", "storefront"))
    assert support.get("/admin/whoami").get_json() == {"name": "support", "role": "support"}
    assert viewer.get("/admin/whoami").get_json() == {"name": "viewer", "role": "viewer"}
    assert storefront.get("/admin/whoami").status_code == 403
    assert app.test_client().get("/admin/definitions").status_code == 401
    kinds = {d["kind"]: d for d in viewer.get("/admin/definitions").get_json()}
    order = kinds["order"]
    assert [s["name"] for s in order["steps"]] == ["pay", "confirm", "ship", "mark_shipped", "notify"]
    assert order["steps"][0]["compensation"] == "cancel_payment" and order["steps"][1]["provider"] is None
    assert order["compensations"] == ["cancel_payment", "cancel_delivery", "notify_outcome"]
    assert kinds["cancel"]["compensations"] == []
