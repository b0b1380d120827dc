"""The Flask application factory."""
from __future__ import annotations

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from api.admin import admin, register_converters
from api.auth import NO_TOKENS, NoTokens, protect
from api.console import console
from api.contract import ContractPlugin
from api.cors import allow_origins
from api.docs import docs
from api.metrics import metrics_blueprint
from api.problems import ProblemApi, register_problem_handlers
from api.rate_limits import limit_orders, trust_proxies
from api.request_ids import track_request_ids
from api.schemas import Money
from api.security_headers import bound_request_bodies, secure_responses
from api.views import blp
from infra import tracing
from infra.config import Settings
from infra.db import Database, engine_options, normalize_url, prepare_engine
from infra.tables import metadata
from services.admission import Admission
from services.health import Readiness
from services.runtime import Runtime, build_runtime

API_DESCRIPTION = (
    "Orders for an online bookstore, carried by an orchestrated saga.\n\n"
    "Every operation but the probes (and /metrics unless METRICS_ROLE is set) needs a bearer token (`bearerAuth`); "
    "`x-roles` names the roles it takes. Every error is `application/problem+json` (RFC 9457, the `Problem` "
    "schema). Every answer carries `X-Request-ID`; a 503 `Retry-After` (but a probe's), a 405 `Allow`. Query "
    "parameters the API does not know are ignored.")


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    """Build the API: configuration from the environment unless given, a runtime per app. Without any API token
    (BOOKMARKET_TOKENS) it refuses to start."""
    settings = settings or Settings.from_env()
    if not settings.api_tokens:
        raise NoTokens(NO_TOKENS)
    app = Flask("bookmarket")
    app.config.update(
        API_TITLE="Book Market",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={"info": {"description": API_DESCRIPTION}},
        SQLALCHEMY_DATABASE_URI=normalize_url(settings.database_url),
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings.database_url, settings.api_db_pool_size,
                                                 prepared_statements=settings.database_prepared_statements,
                                                 application_name="bookmarket-api"),
        JSON_SORT_KEYS=False,
    )
    if runtime is None:
        runtime = build_runtime(settings, db=_flask_database(app))
    app.extensions["bookmarket"] = runtime
    app.extensions["bookmarket.admission"] = Admission(settings.admission_target_ms / 1000)
    app.extensions["bookmarket.readiness"] = Readiness.of(runtime, settings.readiness_timeout_s)
    track_request_ids(app)
    secure_responses(app)
    bound_request_bodies(app, settings.max_body_bytes)
    api = ProblemApi(app, spec_kwargs={"extra_plugins": [ContractPlugin()]})
    api.register_field(Money, "string", "decimal")
    register_converters(app, api)
    api.register_blueprint(blp)
    api.register_blueprint(admin)
    api.register_blueprint(metrics_blueprint(settings.metrics_role))
    app.register_blueprint(console)
    app.register_blueprint(docs)
    register_problem_handlers(app)
    protect(app, api, settings.api_tokens)
    limit_orders(app, settings)  # after protect: a request without a valid token is refused before it is counted
    allow_origins(app, settings.cors_origins)
    trust_proxies(app, settings.trusted_proxies)
    tracing.configure(settings, "bookmarket-api", flask_app=app)
    return app


def _flask_database(app: Flask) -> Database:
    """Flask-SQLAlchemy owns the API's engine; our transactions run on it."""
    db = SQLAlchemy(metadata=metadata)
    db.init_app(app)
    with app.app_context():
        return Database(prepare_engine(db.engine))
