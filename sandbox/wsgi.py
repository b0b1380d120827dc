"""WSGI entry point for gunicorn: `gunicorn --threads 64 sandbox.wsgi:app`."""

from sandbox.app import create_app

app = create_app()
