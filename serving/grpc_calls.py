"""Calls that take one request message, served so that a client cannot leave one unanswered.

grpc.aio reads a unary call's message before the method runs. When the client ends its stream without
one (or with a message cut short), grpc.aio returns without a status: the client waits for ever, and
the server holds the call (about 17 KB) until the client gives up; 50,000 of them took 850 MB. When the
message does not parse, grpc.aio answers UNKNOWN with Python's exception and logs a traceback for each
call. gRPC's C++ server, which TF Serving runs, answers both at once, INTERNAL (`GenericDeserialize`,
grpcpp/impl/proto_utils.h). So every method of the services is registered here as one that reads its
own request: the method is the same, the message is read and parsed by `RequestReader`, which also
gives the message a deadline (--grpc_request_timeout_in_ms): a call whose client opens it and sends
nothing holds the same memory, and gRPC has no timeout of its own for it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from serving.deadlines import Deadlines

NO_MESSAGE = "No payload"  # gRPC C++'s words (grpcpp/impl/proto_utils.h, GenericDeserialize)


class RequestReader:
    """Reads each call's one request message, within `timeout_s` of the call's start."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._deadlines = Deadlines.for_timeout(timeout_s)

    async def read(self, context: grpc.aio.ServicerContext, parse: Callable[[bytes], Any] | None) -> Any:
        """The call's message, parsed; a call without one, or with one that does not parse, ends here,
        INTERNAL, as gRPC C++ ends it; one whose message has not all arrived in time, DEADLINE_EXCEEDED.
        Messages after the first are not read, as for a unary call."""
        task = asyncio.current_task()
        assert task is not None
        self._deadlines.watch(task, asyncio.get_running_loop().time() + self.timeout_s)
        try:
            raw = await context.read()
        except asyncio.CancelledError:
            if not self._deadlines.expired(task):
                raise
            task.uncancel()
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the request message did not arrive within {self.timeout_s:g} s",
            )
        finally:
            self._deadlines.forget(task)
        if raw is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INTERNAL, NO_MESSAGE)
        if parse is None:
            return raw
        try:
            return parse(raw)
        except DecodeError:
            await context.abort(grpc.StatusCode.INTERNAL, "the request message could not be parsed")

    def serving(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler`, a unary-request method, as a streaming-request one whose request is read here;
        any other handler as it is."""
        if handler.request_streaming:
            return handler
        parse, read = handler.request_deserializer, self.read
        if not handler.response_streaming:
            method = handler.unary_unary

            async def unary(requests: object, context: grpc.aio.ServicerContext) -> Any:
                return await method(await read(context, parse), context)

            return grpc.stream_unary_rpc_method_handler(unary, None, handler.response_serializer)
        streaming = handler.unary_stream

        async def stream(requests: object, context: grpc.aio.ServicerContext) -> None:
            request = await read(context, parse)
            if inspect.isasyncgenfunction(streaming):
                replies: AsyncIterator[Any] = streaming(request, context)
                async for reply in replies:
                    await context.write(reply)
            else:
                await streaming(request, context)

        return grpc.stream_stream_rpc_method_handler(stream, None, handler.response_serializer)


class _Served(grpc.GenericRpcHandler):
    """A generic handler whose methods have their requests read by a RequestReader."""

    def __init__(self, handler: grpc.GenericRpcHandler, reader: RequestReader) -> None:
        self._handler, self._reader = handler, reader
        self._methods: dict[str, grpc.RpcMethodHandler] = {}  # only methods served, so bounded

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = self._methods.get(details.method)
        if method is None:
            found = self._handler.service(details)
            if found is None:
                return None
            method = self._methods[details.method] = self._reader.serving(found)
        return method


class RequestReadingServer:
    """What the generated `add_*Servicer_to_server` functions register with: a grpc.aio server whose
    methods have their requests read by `reader`."""

    def __init__(self, server: grpc.aio.Server, reader: RequestReader) -> None:
        self._server, self._reader = server, reader

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_Served(handler, self._reader) for handler in handlers])

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self._reader.serving(handler) for name, handler in handlers.items()}
        )
