"""BOOKMARKET_TOKENS: the entries it takes, the ones it refuses at start, and how a presented token is found."""
from __future__ import annotations

import hashlib

import pytest

from infra import tokens as tokens_module
from infra.config import Settings
from infra.tokens import Principal, parse_tokens

STOREFRONT = "a-storefront-token-0123456789"
SUPPORT = "a-support-token-0123456789"


def test_a_role_equals_token_entry_is_named_after_its_role() -> None:
    tokens = parse_tokens(f"storefront={STOREFRONT}", "BOOKMARKET_TOKENS")
    assert tokens.find(STOREFRONT) == Principal("storefront", "storefront")


def test_a_role_colon_name_entry_carries_its_name() -> None:
    tokens = parse_tokens(f"support:alice={SUPPORT},viewer:bob@example.com={STOREFRONT}", "BOOKMARKET_TOKENS")
    assert tokens.find(SUPPORT) == Principal("alice", "support")
    assert tokens.find(STOREFRONT) == Principal("bob@example.com", "viewer")


def test_a_sha256_entry_accepts_the_token_whose_digest_it_holds_without_knowing_the_token() -> None:
    digest = hashlib.sha256(SUPPORT.encode()).hexdigest()  # printf %s "$TOKEN" | sha256sum
    tokens = parse_tokens(f"support:ops=sha256:{digest.upper()}", "BOOKMARKET_TOKENS")
    assert tokens.find(SUPPORT) == Principal("ops", "support")
    assert tokens.find(digest) is None and tokens.find(f"sha256:{digest}") is None


def test_entries_may_be_separated_by_commas_spaces_and_new_lines() -> None:
    tokens = parse_tokens(f"\n storefront={STOREFRONT},\n support={SUPPORT} ,\n", "BOOKMARKET_TOKENS")
    assert tokens.describe() == ["storefront:storefront", "support:support"]


def test_a_role_may_hold_several_tokens_so_that_one_can_be_rotated() -> None:
    tokens = parse_tokens(f"storefront:old={STOREFRONT},storefront:new={SUPPORT}", "BOOKMARKET_TOKENS")
    assert {tokens.find(STOREFRONT), tokens.find(SUPPORT)} == {Principal("old", "storefront"),
                                                               Principal("new", "storefront")}


def test_an_unset_or_blank_setting_gives_no_token() -> None:
    assert not Settings.from_env({}).api_tokens
    assert not Settings.from_env({"BOOKMARKET_TOKENS": " , "}).api_tokens


@pytest.mark.parametrize("token", ["", "a-storefront-token-012345678", "a-storefront-token-01234567890",
                                   "A-STOREFRONT-TOKEN-0123456789", " a-storefront-token-0123456789"])
def test_only_the_exact_token_is_found(token: str) -> None:
    assert parse_tokens(f"storefront={STOREFRONT}", "BOOKMARKET_TOKENS").find(token) is None


def test_a_token_is_found_with_one_hash_whatever_the_number_of_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = ",".join(f"storefront:client{i}=token-of-client-number-{i}" for i in range(200))
    tokens = parse_tokens(raw, "BOOKMARKET_TOKENS")
    hashed: list[str] = []
    real = tokens_module.token_digest
    monkeypatch.setattr(tokens_module, "token_digest", lambda t: hashed.append(t) or real(t))
    assert tokens.find("token-of-client-number-150") == Principal("client150", "storefront")
    assert tokens.find("no-such-token-0123456789") is None
    assert hashed == ["token-of-client-number-150", "no-such-token-0123456789"]


@pytest.mark.parametrize(("raw", "message"), [
    (f"storefront{STOREFRONT}", r"BOOKMARKET_TOKENS, entry 1: expected role=token or role:name=token"),
    ("storefront=", r"entry 1: expected role=token"),
    (f"support={SUPPORT},admin={STOREFRONT}", r"entry 2: unknown role; the roles are storefront, support, viewer"),
    (f"support:={SUPPORT}", r"entry 1: a name is 1 to 64"),
    (f"support:a b={SUPPORT}", r"entry 1: expected role=token"),  # "a" then "b=...": split on white space
    (f"support:-x={SUPPORT}", r"entry 1: a name is 1 to 64"),
    ("viewer=short-token", r"entry 1: a token needs at least 16 characters"),
    ("viewer=sha256:abcdef", r"entry 1: sha256: must be followed by the 64 hex digits"),
    (f"viewer=sha256:{'g' * 64}", r"entry 1: sha256: must be followed by the 64 hex digits"),
    (f"storefront={STOREFRONT},support={STOREFRONT}", r"BOOKMARKET_TOKENS: entries 1 and 2 hold the same token"),
    (f"storefront={STOREFRONT},support=sha256:{hashlib.sha256(STOREFRONT.encode()).hexdigest()}",
     r"entries 1 and 2 hold the same token"),
])
def test_a_bad_entry_stops_the_settings_with_a_message_naming_its_position_but_never_its_token(
        raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        Settings.from_env({"BOOKMARKET_TOKENS": raw})
    for secret in (STOREFRONT, SUPPORT, "short-token"):
        assert secret not in str(raised.value)


def test_support_includes_storefront_and_viewer_and_the_others_only_themselves() -> None:
    assert all(Principal("ops", "support").has(role) for role in ("storefront", "support", "viewer"))
    assert [r for r in ("storefront", "support", "viewer") if Principal("shop", "storefront").has(r)] == ["storefront"]
    assert [r for r in ("storefront", "support", "viewer") if Principal("eve", "viewer").has(r)] == ["viewer"]


def test_the_hashed_form_holds_no_plain_token_and_finds_the_same_principals() -> None:
    tokens = parse_tokens(f"storefront={STOREFRONT},support:alice={SUPPORT}", "BOOKMARKET_TOKENS")
    hashed = tokens.hashed()
    assert STOREFRONT not in hashed and SUPPORT not in hashed
    again = parse_tokens(hashed, "BOOKMARKET_TOKENS")
    assert again == tokens
    assert again.find(SUPPORT) == Principal("alice", "support")
