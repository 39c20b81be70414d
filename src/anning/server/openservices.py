"""The services that answer without a token - health, and reflection with `--reflection` -
behind the same decoding as anning's own methods (anning.server.requests).

Registered as grpc_health and grpc_reflection do it, their requests were decoded by gRPC:
bytes that were not a request were answered UNKNOWN, with a traceback in the log, to anyone
who could reach the port, token or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from anning.server.requests import BadRequests, UndecodableRequest, abort, decode, send

__all__ = ["health_handlers", "reflection_handlers"]


def _identity(x: bytes) -> bytes:
    return x


def health_handlers(servicer: Any, bad: BadRequests) -> dict[str, grpc.RpcMethodHandler]:
    """Check and Watch of grpc_health's (asyncio) servicer."""
    from grpc_health.v1 import health_pb2

    async def check(raw: bytes, context: Any) -> Any:
        try:
            request = decode(health_pb2.HealthCheckRequest, raw)
        except UndecodableRequest as exc:
            await abort(context, bad, "Health.Check", exc)
        return await servicer.Check(request, context)

    async def watch(raw: bytes, context: Any) -> None:
        try:
            request = decode(health_pb2.HealthCheckRequest, raw)
        except UndecodableRequest as exc:
            await abort(context, bad, "Health.Watch", exc)
        await servicer.Watch(request, context)  # it writes its answers with context.write

    serialize = health_pb2.HealthCheckResponse.SerializeToString
    return {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=_identity, response_serializer=serialize),
        "Watch": grpc.unary_stream_rpc_method_handler(
            watch, request_deserializer=_identity, response_serializer=serialize),
    }


def reflection_handlers(service_names: list[str],
                        bad: BadRequests) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """service name -> handlers of grpc_reflection's (asyncio) servicer listing
    `service_names`."""
    from grpc_reflection.v1alpha import reflection, reflection_pb2

    servicer = reflection.aio.ReflectionServicer(service_names)
    name = "Reflection.ServerReflectionInfo"

    async def info(requests: AsyncIterator[bytes], context: Any) -> None:
        async def decoded() -> AsyncIterator[Any]:
            async for raw in requests:
                try:
                    yield decode(reflection_pb2.ServerReflectionRequest, raw)
                except UndecodableRequest as exc:
                    await abort(context, bad, name, exc)

        async for answer in servicer.ServerReflectionInfo(decoded(), context):
            await send(context, answer)

    return {reflection.SERVICE_NAME: {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
        info, request_deserializer=_identity,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}}
