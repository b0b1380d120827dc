"""How the connection settings reach the clients: DATABASE_PREPARED_STATEMENTS and application_name on every
PostgreSQL connection, a `sentinel://` REDIS_URL for the broker and the other Redis clients."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from cli.main import gunicorn_api, parser
from infra.broker import make_celery
from infra.config import Settings
from infra.db import engine_options
from infra.redis_client import SentinelAddress, sentinel_address

PG = "postgresql://u@db:5432/shop"
ROOT = Path(__file__).resolve().parents[2]


def test_prepared_statements_off_turns_psycopgs_automatic_preparation_off_and_on_leaves_it() -> None:
    off = engine_options(PG, 4, prepared_statements=False, application_name="bookmarket-worker")
    assert off["connect_args"] == {"connect_timeout": 5, "application_name": "bookmarket-worker",
                                   "prepare_threshold": None}
    assert "prepare_threshold" not in engine_options(PG)["connect_args"]
    assert Settings.from_env({}).database_prepared_statements is True
    assert Settings.from_env({"DATABASE_PREPARED_STATEMENTS": "off"}).database_prepared_statements is False
    with pytest.raises(ValueError, match="DATABASE_PREPARED_STATEMENTS must be one of on, off"):
        Settings.from_env({"DATABASE_PREPARED_STATEMENTS": "no"})


def test_an_application_name_in_the_url_is_kept() -> None:
    assert "application_name" not in engine_options(f"{PG}?application_name=mine")["connect_args"]


def test_a_sentinel_url_names_every_sentinel_the_database_and_the_credentials() -> None:
    assert sentinel_address("redis://cache:6379/0") is None
    assert sentinel_address("sentinel://:pw@s1:26380/2;sentinel://s2") == SentinelAddress(
        (("s1", 26380), ("s2", 26379)), 2, None, "pw")
    with pytest.raises(ValueError, match="REDIS_URL"):
        sentinel_address("sentinel://s1:26379;redis://s2:6379")


def test_the_broker_on_sentinels_asks_for_the_configured_master() -> None:
    settings = Settings.from_env({"REDIS_URL": "sentinel://:pw@s1:26379/0", "REDIS_SENTINEL_MASTER": "shop"})
    options = make_celery(settings).conf.broker_transport_options
    assert options["master_name"] == "shop" and options["sentinel_kwargs"]["password"] == "pw"
    assert "master_name" not in make_celery(Settings.from_env({})).conf.broker_transport_options


def test_the_readmes_postgresql_connection_totals_follow_the_defaults_of_the_chart_compose_and_up() -> None:
    values = yaml.safe_load((ROOT / "helm/bookmarket/values.yaml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    pool = int(values["config"]["dbPoolSize"])
    assert pool == Settings.from_env({}).db_pool_size == int(compose["x-bookmarket-env"]["DB_POOL_SIZE"])
    api_pool = int(values["config"]["apiDbPoolSize"])
    assert api_pool == Settings.from_env({}).api_db_pool_size == int(compose["x-bookmarket-env"]["API_DB_POOL_SIZE"])
    per_api = inspect.signature(gunicorn_api).parameters["workers"].default * api_pool  # gunicorn processes
    per_worker = pool + 1  # and its sweeper
    scale = {bound: values["api"]["autoscaling"][bound] * per_api + values["worker"]["autoscaling"][bound] * per_worker
             for bound in ("minReplicas", "maxReplicas")}
    up_workers = parser().parse_args(["up"]).workers
    in_compose = per_api + compose["services"]["worker"]["deploy"]["replicas"] * per_worker
    readme = (ROOT / "README.md").read_text()
    for total in (per_api + up_workers * per_worker, in_compose, scale["minReplicas"], scale["maxReplicas"]):
        assert f"= **{total}**" in readme, total
    assert scale["minReplicas"] <= 100 - 3 - 10  # the chart's least fits a default PostgreSQL, with room for tools
