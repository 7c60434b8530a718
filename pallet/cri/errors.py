"""pallet errors → gRPC status codes, in one place, and the interceptor that applies them.

Every RPC handler runs inside `ErrorMapping`: a PalletError becomes its status code with
the error's own message; anything else is logged with its traceback and becomes INTERNAL,
so a bad request can fail its RPC but never the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pallet.cri.workers import DeadlineExceeded
from pallet.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PalletError,
)

log = logging.getLogger("pallet.cri")


class Unimplemented(PalletError):
    """An RPC pallet does not serve (yet); the message says why."""


class ResourceExhausted(PalletError):
    """A bounded resource (in-flight streaming URLs, sessions) is full; retry later."""


# Most specific first: the first class the error is an instance of decides.
GRPC_CODES: list[tuple[type[PalletError], grpc.StatusCode]] = [
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def grpc_code(exc: BaseException) -> grpc.StatusCode:
    for cls, code in GRPC_CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, method: str, exc: Exception) -> None:
    if isinstance(exc, PalletError):
        code = grpc_code(exc)
        log.info("%s: %s: %s", method, code.name, exc)
        context.abort(code, str(exc))
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL,
                  f"{method.rsplit('/', 1)[-1]} failed inside pallet: {type(exc).__name__}: {exc}")


class ErrorMapping(grpc.ServerInterceptor):
    """Wraps every unary and server-streaming handler with the mapping above."""

    def intercept_service(self, continuation: Callable[[Any], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        if handler.unary_unary:
            inner = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return inner(request, context)
                except Exception as e:  # noqa: BLE001 - mapped to a status, never re-raised
                    _abort(context, method, e)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from inner_stream(request, context)
                except Exception as e:  # noqa: BLE001 - mapped to a status, never re-raised
                    _abort(context, method, e)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # CRI has no client-streaming RPCs
