"""gunicorn's own log lines (access and error) in LOG_FORMAT, like the application's: `--logger-class
api.access_log.Logger`. An access line's fields are the method, path, status, size, duration and request id;
never a header, so never a token."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from gunicorn import glogging

from infra.config import Settings
from infra.logs import formatter


class Logger(glogging.Logger):  # type: ignore[misc]
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        fmt = formatter(Settings.from_env().log_format)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(fmt)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        fields = {
            "remote_addr": atoms["h"], "method": atoms["m"], "path": atoms["U"], "status": int(atoms["s"]),
            "bytes": atoms["B"], "duration_ms": round(request_time.total_seconds() * 1000, 1),
            "request_id": atoms.get("{x-request-id}o"), "user_agent": atoms["a"],
        }
        self.access_log.info("%s %s %s %s", atoms["m"], atoms["U"], atoms["s"], atoms["M"], extra=fields)

