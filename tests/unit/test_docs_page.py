"""/docs works offline: Swagger UI comes from the pinned swagger-ui-bundle package through the API itself, and the
page's content security policy lets it load from this origin only."""
from __future__ import annotations

import re
from html.parser import HTMLParser

from flask.testing import FlaskClient

from api.app import create_app
from api.docs import CSP
from services.runtime import Runtime


class Assets(HTMLParser):
    """Every URL the page loads: scripts, styles, icons, images, frames; and whether it has inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name) and tag in ("script", "link", "img", "iframe"):
                self.urls.append(found[name] or "")
        self._in_script = tag == "script" and not found.get("src")
        self.inline_script |= any(name.startswith("on") for name in found) or "style" in found

    def handle_data(self, data: str) -> None:
        self.inline_script |= self._in_script and bool(data.strip())

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def open_client(runtime: Runtime) -> FlaskClient:
    """A client without any token: the page and its files are open."""
    return create_app(runtime.settings, runtime=runtime).test_client()


def test_the_docs_page_loads_only_same_origin_assets_and_each_answers_200(runtime: Runtime) -> None:
    client = open_client(runtime)
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assets = Assets()
    assets.feed(page.get_data(as_text=True))
    assert assets.urls and not assets.inline_script
    for url in assets.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.get_data(), url
    assert "/docs/swagger-ui/swagger-ui-bundle.js" in assets.urls


def test_the_docs_script_reads_this_apis_openapi_without_the_online_validator(runtime: Runtime) -> None:
    client = open_client(runtime)
    script = client.get("/docs/static/docs.js").get_data(as_text=True)
    assert 'url: "/openapi.json"' in script and "validatorUrl: null" in script
    assert not re.search(r"https?://", script)
    assert client.get("/openapi.json").status_code == 200


def test_the_docs_policy_allows_this_origin_only(runtime: Runtime) -> None:
    response = open_client(runtime).get("/docs")
    assert response.headers["Content-Security-Policy"] == CSP
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in CSP and "http" not in CSP


def test_only_the_swagger_ui_files_the_page_needs_are_served(runtime: Runtime) -> None:
    client = open_client(runtime)
    assert client.get("/docs/swagger-ui/swagger-ui.css").mimetype == "text/css"
    assert client.get("/docs/swagger-ui/index.html").status_code == 404
    assert client.get("/docs/swagger-ui/swagger-ui.js.map").status_code == 404
    assert client.get("/docs/static/../../app.py").status_code == 404
