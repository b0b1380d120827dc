"""Entry module for the Celery CLI: `celery -A workers.main worker` (the app is built here, and only here)."""
from workers.app import create_celery

app = create_celery()
