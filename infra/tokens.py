"""The API's bearer tokens (BOOKMARKET_TOKENS) and the roles they carry.

The setting is parsed once into a table keyed by each token's sha256 digest: a request's token is hashed once,
looked up in a dict, and the match confirmed with hmac.compare_digest, so neither the token's length nor a shared
prefix shows in the time an answer takes. Only digests are kept; a token given as `sha256:<hex>` is never known
in plain at all.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

ROLES = ("storefront", "support", "viewer")
# The roles a token's role stands in for: support may do whatever storefront and viewer may.
INCLUDES: Mapping[str, frozenset[str]] = {
    "storefront": frozenset({"storefront"}),
    "viewer": frozenset({"viewer"}),
    "support": frozenset(ROLES),
}
MIN_TOKEN_CHARS = 16
HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
ENTRY_FORM = "expected role=token or role:name=token"
_NO_MATCH = hashlib.sha256(b"").digest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (its role when it has none) and its role."""

    name: str
    role: str

    def has(self, role: str) -> bool:
        """True if this principal's role is `role` or includes it."""
        return role in INCLUDES[self.role]


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


@dataclass(frozen=True)
class Tokens:
    """The configured tokens by sha256 digest."""

    by_digest: Mapping[bytes, _Entry] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_digest)

    def find(self, token: str) -> Principal | None:
        """The principal a presented token stands for, or None: one hash, one dict lookup, one constant-time
        comparison, hit or miss."""
        digest = token_digest(token)
        entry = self.by_digest.get(digest)
        matched = hmac.compare_digest(entry.digest if entry else _NO_MATCH, digest)
        return entry.principal if entry is not None and matched else None

    def describe(self) -> list[str]:
        """`role:name` of every token, secrets left out (for `bookmarket config`)."""
        return [f"{e.principal.role}:{e.principal.name}" for e in self.by_digest.values()]

    def hashed(self) -> str:
        """The same tokens as a BOOKMARKET_TOKENS value in the `sha256:` form, for processes that only check them."""
        return ",".join(f"{e.principal.role}:{e.principal.name}=sha256:{e.digest.hex()}"
                        for e in self.by_digest.values())


def token_digest(token: str) -> bytes:
    """The SHA-256 of a token's UTF-8 bytes: what `sha256:<hex>` entries hold (`printf %s TOKEN | sha256sum`)."""
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(raw: str, source: str) -> Tokens:
    """Entries `role=token`, `role:name=token` or `role[:name]=sha256:<hex of the token's sha256>`, separated by
    commas or white space. A bad entry raises ValueError naming `source` and the entry's position, never its
    token."""
    entries: dict[bytes, _Entry] = {}
    positions: dict[bytes, int] = {}
    for number, item in enumerate(re.split(r"[,\s]+", raw.strip()), 1):
        if not item:
            continue
        entry = _entry(item, f"{source}, entry {number}")
        if entry.digest in entries:
            raise ValueError(f"{source}: entries {positions[entry.digest]} and {number} hold the same token")
        entries[entry.digest], positions[entry.digest] = entry, number
    return Tokens(entries)


def _entry(item: str, where: str) -> _Entry:
    who, sep, secret = item.partition("=")
    role, has_name, name = who.partition(":")
    if not sep or not secret:
        raise ValueError(f"{where}: {ENTRY_FORM}")
    if role not in ROLES:
        raise ValueError(f"{where}: unknown role; the roles are {', '.join(ROLES)} ({ENTRY_FORM})")
    if has_name and not NAME.fullmatch(name):
        raise ValueError(f"{where}: a name is 1 to 64 letters, digits, '_', '.', '@' or '-', starting with a letter "
                         "or digit")
    return _Entry(_secret_digest(secret, where), Principal(name if has_name else role, role))


def _secret_digest(secret: str, where: str) -> bytes:
    hashed = HASHED.fullmatch(secret)
    if hashed:
        return bytes.fromhex(hashed.group(1))
    if secret.startswith("sha256:"):
        raise ValueError(f"{where}: sha256: must be followed by the 64 hex digits of the token's SHA-256")
    if len(secret) < MIN_TOKEN_CHARS:
        raise ValueError(f"{where}: a token needs at least {MIN_TOKEN_CHARS} characters")
    return token_digest(secret)
