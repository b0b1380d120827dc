"""`bookmarket config`: the settings the environment gives, as JSON, with passwords masked."""
from __future__ import annotations

import json

import pytest

from cli.main import main


def test_config_prints_every_setting_as_json_with_url_passwords_masked(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://shop:s3cr%40t@db.internal:5432/shop")
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@cache:6379/1")
    monkeypatch.setenv("PUBLISH_TIMEOUT_S", "3")
    monkeypatch.setenv("BREAKER_POLICIES", '{"payment": {"fail_max": 2}}')
    monkeypatch.delenv("PAYMENT_URL", raising=False)
    monkeypatch.setenv("SANDBOX_URL", "http://sandbox:8090")
    assert main(["config"]) == 0
    printed = capsys.readouterr().out
    settings = json.loads(printed)
    assert settings["database_url"] == "postgresql://shop:***@db.internal:5432/shop"
    assert settings["redis_url"] == "redis://:***@cache:6379/1"
    assert "s3cr" not in printed and "hunter2" not in printed
    assert settings["payment_url"] == "http://sandbox:8090/payment"
    assert settings["publish_timeout_s"] == 3.0
    assert settings["breaker_policies"] == {"payment": {"fail_max": 2}}
    assert {"queue", "inline_steps", "breaker_redis_timeout_s"} <= settings.keys()
