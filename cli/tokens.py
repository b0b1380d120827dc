"""The API tokens `bookmarket up` makes when BOOKMARKET_TOKENS is not set: a storefront and a support token, kept
in `<data-dir>/api-tokens` (mode 0600) and reused by every later `up`; `bookmarket api` uses them too. The processes
started with them get only their sha256 form."""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from infra.tokens import Tokens, parse_tokens

TOKENS_FILE = "api-tokens"
MADE_ROLES = ("storefront", "support")
HEADER = ("# Book Market API tokens, made by `bookmarket up` and used while BOOKMARKET_TOKENS is not set.\n"
          "# One role=token (or role:name=token) a line; keep this file private.\n")


def tokens_file(data_dir: Path) -> Path:
    return data_dir / TOKENS_FILE


def load_or_make(path: Path) -> tuple[list[str], Tokens]:
    """The entries of the token file and their tokens; the file is first made, with a new random token per role,
    if there is none."""
    with contextlib.suppress(FileExistsError):  # made already (perhaps by another `up` just now)
        _write_new(path, [f"{role}={secrets.token_urlsafe(32)}" for role in MADE_ROLES])
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return read(path)


def read(path: Path) -> tuple[list[str], Tokens]:
    """The file's entries and their tokens (ValueError, naming the file, on a bad entry)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    entries = [line for line in lines if line and not line.startswith("#")]
    return entries, parse_tokens(",".join(entries), str(path))


def _write_new(path: Path, entries: list[str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(HEADER + "".join(f"{entry}\n" for entry in entries))
