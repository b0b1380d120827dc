"""Problem details (RFC 9457) raised by the sandbox and the answers providers give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

PROBLEM_TYPE_BASE = "urn:bookmarket:sandbox:problem:"


@dataclass(frozen=True)
class Answer:
    """A provider answer: HTTP status, JSON body and whether the body is a problem document."""

    status: int
    body: JSON
    problem: bool = False


class Problem(Exception):
    """An error answered as application/problem+json."""

    def __init__(self, status: int, slug: str, title: str, detail: str, **extra: Any) -> None:
        """Keep the problem's status, type slug, title, detail and extension members."""
        super().__init__(detail)
        self.status = status
        self.body: JSON = {
            "type": PROBLEM_TYPE_BASE + slug,
            "title": title,
            "status": status,
            "detail": detail,
            **extra,
        }

    def answer(self) -> Answer:
        """Return the problem as a provider answer."""
        return Answer(self.status, self.body, problem=True)


def invalid_field(field: str, detail: str) -> Problem:
    """Return the 422 problem for one invalid field, named in `field`."""
    return Problem(422, "invalid-field", "Invalid field", detail, field=field)


def bad_request(slug: str, title: str, detail: str) -> Problem:
    """Return a 400 problem."""
    return Problem(400, slug, title, detail)
