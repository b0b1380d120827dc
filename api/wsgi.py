"""WSGI entry for gunicorn: `gunicorn 'api.wsgi:app'`; the application's log lines in LOG_FORMAT."""
from api.app import create_app
from infra.config import Settings
from infra.logs import configure_logging

settings = Settings.from_env()
configure_logging(settings.log_format)
app = create_app(settings)
