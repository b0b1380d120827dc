"""Health of the things a request needs: the database and the broker."""
from __future__ import annotations

import sqlalchemy as sa

from services.runtime import Runtime


def check_health(rt: Runtime) -> dict[str, str]:
    """'ok' or the error, for each dependency, and an overall status."""
    report = {"database": _database(rt), "broker": _broker(rt)}
    report["status"] = "ok" if all(v == "ok" for v in report.values()) else "degraded"
    return report


def _database(rt: Runtime) -> str:
    try:
        with rt.db.reading() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"error: {type(exc).__name__}"
    return "ok"


def _broker(rt: Runtime) -> str:
    try:
        with rt.publisher.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=rt.settings.publish_timeout_s)
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"
    return "ok"
