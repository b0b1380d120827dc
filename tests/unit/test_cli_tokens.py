"""The API tokens of `bookmarket up` and `bookmarket api` when BOOKMARKET_TOKENS is not set: made once in the data
folder, private, reused, handed to the API processes in their sha256 form only."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from cli import main as cli_main
from cli.tokens import load_or_make, tokens_file
from infra.tokens import Principal, parse_tokens
from tests.support import free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plain(entries: list[str]) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in entries)


def test_up_makes_a_storefront_and_a_support_token_in_a_private_file_and_passes_only_their_digests(
        tmp_path: Path) -> None:
    env: dict[str, str] = {}
    shown = cli_main._tokens_for_up(tmp_path, env)

    path = tokens_file(tmp_path)
    assert mode(path) == 0o600
    made = plain(load_or_make(path)[0])
    assert set(made) == {"storefront", "support"}
    assert all(len(token) >= 40 for token in made.values())  # secrets.token_urlsafe(32)
    assert all(f"{role}={token}" in shown for role, token in made.items())  # printed at start
    assert str(path) in shown
    assert not any(token in env["BOOKMARKET_TOKENS"] for token in made.values())
    passed = parse_tokens(env["BOOKMARKET_TOKENS"], "BOOKMARKET_TOKENS")
    assert passed.find(made["storefront"]) == Principal("storefront", "storefront")
    assert passed.find(made["support"]) == Principal("support", "support")


def test_the_next_up_reuses_the_tokens_it_made(tmp_path: Path) -> None:
    first: dict[str, str] = {}
    cli_main._tokens_for_up(tmp_path, first)
    text = tokens_file(tmp_path).read_text()
    again: dict[str, str] = {}
    cli_main._tokens_for_up(tmp_path, again)
    assert again["BOOKMARKET_TOKENS"] == first["BOOKMARKET_TOKENS"]
    assert tokens_file(tmp_path).read_text() == text


def test_another_data_folder_gets_other_tokens(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert load_or_make(tokens_file(tmp_path / "a"))[0] != load_or_make(tokens_file(tmp_path / "b"))[0]


def test_a_token_file_readable_by_others_is_made_private_again(tmp_path: Path) -> None:
    path = tokens_file(tmp_path)
    load_or_make(path)
    path.chmod(0o644)
    load_or_make(path)
    assert mode(path) == 0o600


def test_up_with_bookmarket_tokens_set_makes_no_file_and_keeps_the_setting(tmp_path: Path) -> None:
    env = {"BOOKMARKET_TOKENS": "storefront=given-storefront-token"}
    assert cli_main._tokens_for_up(tmp_path, env) == "from BOOKMARKET_TOKENS"
    assert env == {"BOOKMARKET_TOKENS": "storefront=given-storefront-token"}
    assert not tokens_file(tmp_path).exists()


def test_entries_added_to_the_token_file_by_hand_are_used_and_a_bad_one_stops_up(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tokens_file(tmp_path)
    load_or_make(path)
    with path.open("a") as handle:
        handle.write("viewer:eve=eve-reads-the-admin-pages\n")
    env: dict[str, str] = {}
    cli_main._tokens_for_up(tmp_path, env)
    assert parse_tokens(env["BOOKMARKET_TOKENS"], "x").find("eve-reads-the-admin-pages") == Principal("eve", "viewer")

    with path.open("a") as handle:
        handle.write("admin=no-such-role-token\n")
    monkeypatch.delenv("BOOKMARKET_TOKENS", raising=False)
    args = ["up", "--data-dir", str(tmp_path), "--port", str(free_port()), "--sandbox-port", str(free_port()),
            "--flower-port", "0"]
    assert cli_main.main(args) == 2
    err = capsys.readouterr().err
    assert f"{path}, entry 4: unknown role" in err and "no-such-role-token" not in err


@pytest.fixture
def exec_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """`bookmarket api` runs nothing: the argv it would exec is recorded."""
    calls: list[list[str]] = []

    def record(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    monkeypatch.setattr(cli_main, "_exec", record)
    return calls


def test_bookmarket_api_without_tokens_or_a_token_file_refuses_to_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        exec_argv: list[Any]) -> None:
    monkeypatch.delenv("BOOKMARKET_TOKENS", raising=False)
    assert cli_main.main(["api", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "BOOKMARKET_TOKENS is not set" in err and str(tokens_file(tmp_path)) in err and "bookmarket up" in err
    assert exec_argv == []


def test_bookmarket_api_takes_the_tokens_up_made_in_the_data_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exec_argv: list[Any]) -> None:
    monkeypatch.delenv("BOOKMARKET_TOKENS", raising=False)
    made = plain(load_or_make(tokens_file(tmp_path))[0])
    monkeypatch.setenv("BOOKMARKET_DATA_DIR", str(tmp_path))
    assert cli_main.main(["api"]) == 0
    assert exec_argv and exec_argv[0][-1] == "api.wsgi:app"
    passed = parse_tokens(cli_main.os.environ["BOOKMARKET_TOKENS"], "BOOKMARKET_TOKENS")
    assert passed.find(made["support"]) == Principal("support", "support")


def test_a_malformed_setting_stops_any_command_with_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BOOKMARKET_TOKENS", "storefront=too-short")
    assert cli_main.main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "bookmarket: BOOKMARKET_TOKENS, entry 1: a token needs at least 16 characters"


def test_config_shows_the_roles_and_names_of_the_tokens_never_the_tokens(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BOOKMARKET_TOKENS", "storefront=shop-token-0123456789,support:alice=alice-token-0123456789")
    assert cli_main.main(["config"]) == 0
    printed = capsys.readouterr().out
    assert '"storefront:storefront"' in printed and '"support:alice"' in printed
    assert "shop-token" not in printed and "alice-token" not in printed
