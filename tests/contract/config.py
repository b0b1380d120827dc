"""Schemathesis's configuration for both runs: every check, a small number of examples, the same cases each run."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis

# Valid by the schema but refused by a rule the schema cannot state, with a 422 naming the field: a book that is
# not in the catalog; a step the saga does not have.
REFERENCES = {
    "POST /orders": "book_id must name a book of the catalog",
    "POST /admin/sagas/{saga_id}/{action}": "step must name a step of the saga",
    "POST /admin/bulk": "step must name a step of the saga kind",
}
ACCEPTED = ["2xx", "401", "403", "404", "409", "422", "429"]


def config(max_examples: int) -> Any:
    return schemathesis.Config.from_dict({
        "generation": {
            "max-examples": max_examples,
            "deterministic": True,  # the same cases every run: CI fails on a change, not on luck
            "database": "none",
            # Authorization comes from the test's token, and ignored_auth probes it; the API ignores query
            # parameters it does not know (the README says so), so it is not fuzzed with them.
            "with-security-parameters": False,
            "allow-extra-parameters": False,
        },
        "operations": [{"include-name": name, "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}}
                       for name in REFERENCES],
    })


def document() -> dict[str, Any]:
    """The API's OpenAPI document, as its app serves it (built on a throwaway SQLite copy: the document does not
    depend on the database)."""
    from api.app import create_app
    from tests.unit.fakes import make_runtime

    with tempfile.TemporaryDirectory(prefix="bookmarket-openapi-") as folder:
        runtime = make_runtime(Path(folder))
        try:
            spec: dict[str, Any] = create_app(runtime.settings, runtime=runtime).test_client().get(
                "/openapi.json").get_json()
        finally:
            runtime.close()
    return spec
