"""Access: bearer tokens with roles `check`, `write`, `admin` (SPEC §7).

The tokens file and its digests are anning.server.tokens (no gRPC there). Health and
reflection need no token. With no tokens file the server listens on loopback only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from anning.server.tokens import ROLES, Tokens, new_token

__all__ = ["ROLES", "AuthInterceptor", "Tokens", "new_token", "required_role"]

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
