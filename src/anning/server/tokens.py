"""The tokens file (SPEC §7): `sha256:<hex digest> role[,role...]` a line; tokens themselves are
never stored (`anning token new` prints a token and its line). No gRPC here: the parent of the
workers reads the file once, before it forks, and a bad file stops the start with a message.

The file's mode is checked when it is read. Writable by group or others: refused, since whoever
can write it can give themselves any role. Readable by others: a warning only, since it holds
SHA-256 digests of 256-bit random tokens, which cannot be turned back into tokens (group read
is the usual `root:anning 0640` and says nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import string
from os import PathLike
from pathlib import Path

from anning.errors import InvalidInput

__all__ = ["ROLES", "Tokens", "new_token"]

log = logging.getLogger("anning.server")
ROLES = ("check", "write", "admin")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(roles: list[str]) -> tuple[str, str]:
    """A fresh token and the line that grants it `roles` in a tokens file."""
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise ValueError(f"roles: {roles!r}; each one of {', '.join(ROLES)}")
    token = secrets.token_urlsafe(32)
    return token, f"sha256:{_digest(token)} {','.join(roles)}"


class Tokens:
    """Token digests -> roles, from a tokens file."""

    def __init__(self, roles_by_digest: dict[str, frozenset[str]]) -> None:
        self._known = list(roles_by_digest.items())

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Tokens:
        """InvalidInput naming the file (and the line) when it is unsafe, malformed or empty;
        OSError when it cannot be read."""
        _check_mode(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path}: not UTF-8 text (byte {exc.start})") from None
        roles: dict[str, frozenset[str]] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].startswith("sha256:") or len(parts[0]) != 71 \
                    or not _is_hex(parts[0][7:]):
                raise InvalidInput(f"{path}:{n}: expected `sha256:<64 hex digits> roles`")
            granted = frozenset(parts[1].split(","))
            if not granted <= set(ROLES):
                raise InvalidInput(f"{path}:{n}: roles {parts[1]!r}; each one of "
                                   f"{', '.join(ROLES)}")
            roles[parts[0][7:].lower()] = granted
        if not roles:
            raise InvalidInput(f"{path}: no tokens (a line `sha256:<hex> roles` each)")
        return cls(roles)

    def roles(self, token: str) -> frozenset[str] | None:
        """The roles of `token`, or None. Its digest is compared with every known digest, each
        comparison in constant time (hmac.compare_digest) and none skipped after a match: the
        time taken says nothing of how much of a digest matched, nor which one did."""
        digest = _digest(token)
        found = None
        for known, granted in self._known:
            if hmac.compare_digest(known, digest):
                found = granted
        return found


def _is_hex(text: str) -> bool:
    return all(c in string.hexdigits for c in text)


def _check_mode(path: str | PathLike[str]) -> None:
    mode = os.stat(path).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InvalidInput(f"{path}: writable by {_who(mode, stat.S_IWGRP, stat.S_IWOTH)} "
                           f"(mode {stat.S_IMODE(mode):04o}), and whoever can write it can give "
                           "themselves any role: chmod go-w it")
    if mode & stat.S_IROTH:
        log.warning("%s: readable by others (mode %04o): it holds only digests, not tokens, "
                    "but who has which role is nobody else's business: chmod o-r it",
                    path, stat.S_IMODE(mode))


def _who(mode: int, group: int, others: int) -> str:
    return " and ".join(w for w, bit in (("group", group), ("others", others)) if mode & bit)
