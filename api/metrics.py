"""GET /metrics: Prometheus's text format, open unless METRICS_ROLE names the role it needs."""
from __future__ import annotations

from flask import Response, current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import public, requires
from services.metrics import render
from services.runtime import Runtime

TEXT = {"text/plain": {"schema": {"type": "string"}}}


def metrics_blueprint(role: str) -> Blueprint:
    """The /metrics endpoint, behind `role` or, when it is empty, open to any caller (a scraper without a token)."""
    blp = Blueprint("metrics", __name__, description="Prometheus metrics")
    access = requires(role) if role else public

    @blp.route("/metrics")
    class Metrics(MethodView):
        @access
        @blp.doc(responses={"200": {"description": "The metrics in the Prometheus text format 0.0.4",
                                    "content": TEXT}})
        def get(self) -> Response:
            """Prometheus metrics.

            Counters and histograms of every API and worker process sharing PROMETHEUS_MULTIPROC_DIR, and gauges of
            the sagas, breakers and queue now (see the README, Metrics). Open unless METRICS_ROLE names a role."""
            runtime: Runtime = current_app.extensions["bookmarket"]
            return Response(render(runtime), mimetype=CONTENT_TYPE_LATEST)

    return blp
