"""Bearer tokens on every endpoint.

A view declares the least role it needs with `@requires(role)` (a token whose role includes it passes: support
includes storefront and viewer) or that it is open with `@public`; `protect` refuses to start on a route that
declares neither. A missing or unknown token answers 401 with `WWW-Authenticate: Bearer`, a role that does not
include the one needed 403, both as problem+json. The caller is `flask.g.principal` (`.name`, `.role`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flask import Flask, Response, g, request
from flask_smorest import Api, Blueprint
from flask_smorest.utils import load_info_from_docstring
from werkzeug.routing import Rule

from api.contract import problem_response
from api.problems import problem
from api.schemas import ProblemSchema
from infra.tokens import INCLUDES, ROLES, Principal, Tokens

F = TypeVar("F", bound=Callable[..., Any])
SCHEME = "bearerAuth"
REALM = 'Bearer realm="bookmarket"'
PUBLIC = "public"
DOCS_BLUEPRINT = "api-docs."  # flask-smorest's /openapi.json: open
NO_TOKENS = ("BOOKMARKET_TOKENS is not set, so the API would let no one in. Set it to role=token entries, e.g. "
             "storefront=<token>,support=<token> (see the README, Access), or start the API with `bookmarket up`, "
             "which makes tokens in its data folder, or `bookmarket api`, which uses them.")


class AccessNotDeclared(RuntimeError):
    """A route whose view declares neither the role it needs nor that it is open."""


class NoTokens(RuntimeError):
    """The API was built without any token."""


def requires(role: str) -> Callable[[F], F]:
    """Declare the least role a view needs: orders need storefront; /admin actions support, its reads viewer."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
    allowed = [r for r in ROLES if role in INCLUDES[r]]

    def declare(view: F) -> F:
        description = load_info_from_docstring(view.__doc__).get("description")
        roles = f"Needs a bearer token of role {' or '.join(allowed)}."
        documented: F = Blueprint.doc(
            security=[{SCHEME: []}], responses={"401": "BEARER_UNAUTHORIZED", "403": "BEARER_FORBIDDEN"},
            description=f"{description}\n\n{roles}" if description else roles, **{"x-roles": allowed},
        )(view)
        setattr(documented, "access", role)  # noqa: B010 - an attribute of a function, read by access_table
        return documented

    return declare


def public(view: F) -> F:
    """Declare a view open to callers without a token (health probes)."""
    setattr(view, "access", PUBLIC)  # noqa: B010
    return view


def current_principal() -> Principal | None:
    """The caller of this request (None on an open endpoint)."""
    principal: Principal | None = g.get("principal")
    return principal


def protect(app: Flask, api: Api, tokens: Tokens) -> None:
    """Check every request's token against the role its view declared (after every blueprint is registered);
    document the scheme and the 401 and 403 answers in the OpenAPI."""
    needs = access_table(app)
    app.before_request(lambda: _authorize(needs, tokens))
    _document(api)


def access_table(app: Flask) -> dict[tuple[str, str], str]:
    """(endpoint, method) -> the role it needs or PUBLIC, for every route; AccessNotDeclared names one that
    declares nothing."""
    return {(rule.endpoint, method): _declared(rule, app.view_functions[rule.endpoint], method)
            for rule in app.url_map.iter_rules() for method in rule.methods or ()}


def _declared(rule: Rule, view: Callable[..., Any], method: str) -> str:
    if method == "OPTIONS" or rule.endpoint == "static" or rule.endpoint.startswith(DOCS_BLUEPRINT):
        return PUBLIC
    view_class = getattr(view, "view_class", None)
    handler = view if view_class is None else getattr(view_class, method.lower(), None)
    if handler is None and method == "HEAD":  # as MethodView.dispatch_request answers HEAD with get
        handler = getattr(view_class, "get", None)
    access: str | None = getattr(handler, "access", None)
    if access is None:
        raise AccessNotDeclared(f"{method} {rule.rule} declares no access: decorate its view with "
                                "@requires(<role>) or @public (api/auth.py)")
    return access


def _authorize(needs: Mapping[tuple[str, str], str], tokens: Tokens) -> Response | None:
    if request.endpoint is None:  # no route matched: 404 or 405 follows
        return None
    needed = needs[(request.endpoint, request.method)]
    if needed == PUBLIC:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _challenge(401, "Unauthorized", "a bearer token is required: Authorization: Bearer <token>", "")
    principal = tokens.find(token)
    if principal is None:
        return _challenge(401, "Unauthorized", "the bearer token is not valid", ', error="invalid_token"')
    if not principal.has(needed):
        return _challenge(403, "Forbidden", f"this needs the {needed} role; the token's role is {principal.role}",
                          f', error="insufficient_scope", scope="{needed}"')
    g.principal = principal
    return None


def _challenge(status: int, title: str, detail: str, error: str) -> Response:
    return problem(status, title, detail, {"WWW-Authenticate": REALM + error})


def _document(api: Api) -> None:
    components = api.spec.components
    components.security_scheme(SCHEME, {
        "type": "http", "scheme": "bearer",
        "description": "A token of BOOKMARKET_TOKENS (`bookmarket up` prints the ones it made). Its role is one "
                       "of: storefront (orders, sagas, the catalog, read models), viewer (the /admin reads) and "
                       "support (everything, /admin actions included); each operation names the roles it takes in "
                       "x-roles. A missing or unknown token answers 401, a role without the one needed 403.",
    })
    components.schema("Problem", schema=ProblemSchema)
    challenge = {"description": "RFC 6750 challenge", "required": True, "schema": {"type": "string"}}
    for name, description in (("BEARER_UNAUTHORIZED", "No bearer token, or one that is not valid"),
                              ("BEARER_FORBIDDEN", "The token's role does not include the role this needs")):
        components.response(name, problem_response(description, **{"WWW-Authenticate": challenge}))
