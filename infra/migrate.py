"""Schema migrations (alembic) and the seed catalog, in one call."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from domain.catalog import SEED_BOOKS
from infra import repository as repo
from infra.db import Database, normalize_url


def alembic_config(database_url: str, prepared_statements: bool = True) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", normalize_url(database_url).replace("%", "%%"))
    config.attributes["prepared_statements"] = prepared_statements  # DATABASE_PREPARED_STATEMENTS
    return config


def upgrade(database_url: str, seed: bool = True, prepared_statements: bool = True) -> None:
    """Bring the schema up to date (an empty database too) and add the seed books that are missing."""
    command.upgrade(alembic_config(database_url, prepared_statements), "head")
    if seed:
        db = Database.from_url(database_url, 1, prepared_statements=prepared_statements,
                               application_name="bookmarket-migrate")
        try:
            with db.transaction() as conn:
                repo.seed_books(conn, SEED_BOOKS)
        finally:
            db.dispose()
