"""Access: bearer tokens with roles `check`, `write`, `admin` (SPEC §7).

The tokens file holds one token a line as `sha256:<hex digest> role[,role...]`; tokens
themselves are never stored (`anning token new` prints a token and its line). Health and
reflection need no token. With no tokens file the server listens on loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

import grpc

__all__ = ["ROLES", "AuthInterceptor", "Tokens", "new_token", "required_role"]

ROLES = ("check", "write", "admin")
_METHOD_ROLES = {
    "/anning.v1.Suppression/": ("check",),
    "/anning.v1.OptOuts/Explain": ("check",),
    "/anning.v1.OptOuts/Changes": ("write", "admin"),  # the change feed: upstream's reading
    "/anning.v1.OptOuts/": ("write",),
    "/anning.v1.Admin/": ("admin",),
}
_OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def required_role(method: str) -> tuple[str, ...] | None:
    """The roles a method takes (any one of them will do); None for the open ones (health,
    reflection)."""
    if method.startswith(_OPEN):
        return None
    for prefix in sorted(_METHOD_ROLES, key=len, reverse=True):
        if method.startswith(prefix):
            return _METHOD_ROLES[prefix]
    return ("admin",)  # anything else: the strictest


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
        self._roles = roles_by_digest

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Tokens:
        roles: dict[str, frozenset[str]] = {}
        for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].startswith("sha256:") or len(parts[0]) != 71:
                raise ValueError(f"{path}:{n}: expected `sha256:<64 hex digits> roles`")
            granted = frozenset(parts[1].split(","))
            if not granted <= set(ROLES):
                raise ValueError(f"{path}:{n}: roles {parts[1]!r}; each one of {', '.join(ROLES)}")
            roles[parts[0][7:].lower()] = granted
        if not roles:
            raise ValueError(f"{path}: no tokens")
        return cls(roles)

    def roles(self, token: str) -> frozenset[str] | None:
        digest = _digest(token)
        for known, granted in self._roles.items():  # constant time per comparison
            if hmac.compare_digest(known, digest):
                return granted
        return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED without a known bearer token, PERMISSION_DENIED without the role."""

    def __init__(self, tokens: Tokens, on_refusal: Callable[[str, str], None] | None = None):
        self._tokens = tokens
        self._on_refusal = on_refusal or (lambda method, code: None)

    async def intercept_service(self, continuation: Any,
                                details: grpc.HandlerCallDetails) -> Any:
        roles = required_role(details.method)
        if roles is None:
            return await continuation(details)
        token = None
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, rest = value.partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    token = rest.strip()
        if token is None:
            self._on_refusal(details.method, "UNAUTHENTICATED")
            return _deny_like(await continuation(details), grpc.StatusCode.UNAUTHENTICATED,
                              "authorization: a bearer token is required")
        granted = self._tokens.roles(token)
        if granted is None:
            self._on_refusal(details.method, "UNAUTHENTICATED")
            return _deny_like(await continuation(details), grpc.StatusCode.UNAUTHENTICATED,
                              "authorization: unknown token")
        if granted.isdisjoint(roles):
            self._on_refusal(details.method, "PERMISSION_DENIED")
            wanted = " or ".join(repr(r) for r in roles)
            return _deny_like(await continuation(details), grpc.StatusCode.PERMISSION_DENIED,
                              f"this token lacks the role {wanted} for {details.method}")
        return await continuation(details)


def _deny_like(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same kind (unary or streaming) as `handler` that refuses the call."""
    if handler is None:
        return None

    async def unary(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    async def streaming(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises

    kind = (handler.request_streaming, handler.response_streaming)
    factory = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[kind]
    return factory(streaming if kind[1] else unary,
                   request_deserializer=handler.request_deserializer,
                   response_serializer=handler.response_serializer)
