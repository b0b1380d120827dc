"""WSGI entry point for gunicorn: `gunicorn --threads 64 sandbox.wsgi:app`; ledgers in $SANDBOX_DATA_DIR if set."""

import os

from sandbox.app import create_app

app = create_app(os.environ.get("SANDBOX_DATA_DIR") or None)
