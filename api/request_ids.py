"""Every request has an id: the caller's `X-Request-ID` (when sensible) or a new one. It is in the log context of
everything the request logs, in the headers of the step messages it publishes, and in the answer's header."""
from __future__ import annotations

from contextlib import ExitStack

from flask import Flask, Response, g, request

from infra.logs import REQUEST_ID_HEADER, log_context, request_id_from


def track_request_ids(app: Flask) -> None:
    app.before_request(_enter)
    app.after_request(_answer)
    app.teardown_request(_leave)


def _enter() -> None:
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    stack = ExitStack()
    stack.enter_context(log_context(request_id=g.request_id))
    g.log_context = stack


def _answer(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _leave(_exc: BaseException | None) -> None:
    stack: ExitStack | None = g.pop("log_context", None)
    if stack is not None:
        stack.close()
