"""Entry module for the Celery CLI: `celery -A workers.main worker` (the app is built here, and only here). Logging
is set up first, so that what Celery says before its own logging setup is a LOG_FORMAT line too, and so are the
lines its shutdown signal handlers print."""
import celery.apps.worker

from infra.config import Settings
from infra.logs import configure_logging, signal_safe_say
from workers.app import create_celery

settings = Settings.from_env()
configure_logging(settings.log_format)
celery.apps.worker.safe_say = signal_safe_say(settings.log_format, "celery.apps.worker")  # type: ignore[assignment]
app = create_celery(settings)
