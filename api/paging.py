"""Pages of list answers: flask-smorest's pagination with a last page, so `?page=99999999999999999999` answers 422
(and says so in the OpenAPI) instead of reaching the database as an OFFSET it cannot hold."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask_smorest
from marshmallow import fields, validate

MAX_PAGE = 100_000  # times the largest page_size (1,000) still fits any database's OFFSET


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    """flask-smorest's Blueprint whose `paginate` refuses a page past MAX_PAGE."""

    def paginate(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        paginated = super().paginate(*args, **kwargs)

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            wrapper = paginated(func)
            schema = wrapper._apidoc["pagination"]["parameters"]["schema"]  # the class the view parses with
            page = schema._declared_fields["page"]
            schema._declared_fields["page"] = fields.Integer(load_default=page.load_default,
                                                             validate=validate.Range(1, MAX_PAGE))
            return wrapper

        return decorator
