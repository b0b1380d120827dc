"""The alembic migrations create exactly the schema the code declares."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from infra.db import make_engine
from infra.migrate import alembic_config, upgrade
from infra.tables import metadata


def test_migrations_up_to_head_match_the_declared_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_upgrading_twice_is_harmless_and_seeds_the_catalog_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM books").scalar_one() == 6
    engine.dispose()


def legacy_keys_scoped(url: str) -> list[tuple[object, ...]]:
    """Orders keyed before 0008 (keys had no caller), upgraded to head: what each key's scope becomes."""
    config = alembic_config(url)
    command.upgrade(config, "0007")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO books (id, title, price_cents) VALUES (1, 'b', 100)")
            for key in ("retry-1", None):
                conn.execute(sa.text("INSERT INTO orders (customer_id, book_id, qty, amount_cents, status, "
                                     "idempotency_key, created_at, updated_at) VALUES (1, 1, 1, 100, 'PAID', :key, "
                                     "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"key": key})
        command.upgrade(config, "head")
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(
                "SELECT idempotency_key, idempotency_scope FROM orders ORDER BY id")]
    finally:
        engine.dispose()


def test_keys_stored_before_keys_had_a_caller_belong_to_the_default_storefront_token(tmp_path: Path) -> None:
    assert legacy_keys_scoped(f"sqlite:///{tmp_path / 'm.db'}") == [("retry-1", "storefront"), (None, None)]


def test_the_caller_scope_migration_goes_down_and_up_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    legacy_keys_scoped(url)
    command.downgrade(alembic_config(url), "0007")
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()
