"""Alembic environment: the schema is infra.tables.metadata; the URL comes from DATABASE_URL or the caller."""
from __future__ import annotations

from alembic import context

from infra.config import Settings
from infra.db import make_engine
from infra.tables import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url


def run_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url, 1, prepared_statements=config.attributes.get("prepared_statements", True),
                         application_name="bookmarket-migrate")
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
