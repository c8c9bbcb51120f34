"""Calls that take one request message, served so that a client cannot leave one unanswered.

grpc.aio reads a unary call's message before the method runs. When the client ends its stream without
one (or with a message cut short), grpc.aio returns without a status: the client waits for ever, and
the server holds the call (about 17 KB) until the client gives up; 50,000 of them took 850 MB. When the
message does not parse, grpc.aio answers UNKNOWN with Python's exception and logs a traceback for each
call. gRPC's C++ server, which TF Serving runs, answers both at once, INTERNAL. So every method of the
services is registered here as one that reads its own request: the method is the same, the message is
read and parsed by `RequestReader`, which also gives the message a deadline
(--grpc_request_timeout_in_ms): a call whose client opens it and sends nothing holds the same memory,
and gRPC has no timeout of its own for it. A compressed message is inflated here too, within the
server's byte budget (serving/inflate.py).

A refused call is ended with `context.abort` from the method's wrapper, once nothing on the stack holds
the request: gRPC keeps the abort's error on the call, and the error's frames refer back to the call,
so whatever those frames held (a 200 MB request) lived on until Python's cycle collector came by.
"""

from __future__ import annotations

import asyncio
import inspect
import zlib
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from serving.deadlines import Deadlines
from serving.errors import ServingError
from serving.inflate import compression_of, inflated
from serving.limits import ByteBudget

# gRPC C++'s words for a unary call without a message: its handler wraps the missing payload in a
# ByteBuffer (grpcpp/impl/codegen/method_handler.h, UnaryDeserializeHelper) that the
# protobuf reader cannot start on (grpcpp/impl/codegen/proto_buffer_reader.h, ProtoBufferReader).
NO_MESSAGE = "Couldn't initialize byte buffer reader"

# Messages quote what a client sent (a model name of 100 KB, for one), and gRPC sends the message as a
# header: past 8 KiB of headers a client drops the answer and sees only RESOURCE_EXHAUSTED "Stream
# removed". TF Serving cuts them as here (model_servers/grpc_status_util.cc:25-30).
MAX_MESSAGE_CHARS = 1024

# The size of the request message the current call read, inflated when it came compressed: what its
# method holds in the server's byte budget. Sizing the parsed message instead (ByteSize) serializes
# it once more, on the event loop: 0.17 s for 200 MB, which every other call waited out.
message_size: ContextVar[int] = ContextVar("message_size")


def status_message(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[:MAX_MESSAGE_CHARS] + "...TRUNCATED"


def refuse(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    """Mark the call refused with `code`; the method then returns None, and its wrapper
    (`RequestReader.serving`) ends the call with that status alone, as gRPC C++ sends an error."""
    context.set_code(code)
    context.set_details(status_message(message))


class RequestReader:
    """Reads each call's one request message, within `timeout_s` of the call's start; inflates it
    within `budget` when it is compressed."""

    def __init__(self, timeout_s: float, budget: ByteBudget) -> None:
        self.timeout_s, self.budget = timeout_s, budget
        self._deadlines = Deadlines.for_timeout(timeout_s)

    async def read(self, context: grpc.aio.ServicerContext, parse: Callable[[Any], Any]) -> Any:
        """The call's message, parsed, or None when the call is refused: without a message, or with
        one that does not parse, INTERNAL, as gRPC C++ refuses it; whose message has not all arrived in
        time, DEADLINE_EXCEEDED. Messages after the first are not read, as for a unary call."""
        arrived = await self._arrived(context)
        if arrived is None:
            return None
        raw: bytes | bytearray = arrived
        wbits = compression_of(raw)
        if wbits is not None:
            try:
                raw = await inflated(raw, wbits, self.budget)
            except zlib.error:
                pass  # not compressed after all: parsed as it came
            except ServingError as err:  # as gRPC refuses a message over its size limit
                refuse(
                    context,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the request message inflates too far: {err.message}",
                )
                return None
        held = len(raw) if raw is not arrived else 0
        message_size.set(len(raw))
        try:
            return parse(raw)
        except DecodeError:
            refuse(context, grpc.StatusCode.INTERNAL, "the request message could not be parsed")
            return None
        finally:
            self.budget.give_back(held)  # a parsed request is held from here on, by its method

    async def _arrived(self, context: grpc.aio.ServicerContext) -> bytes | None:
        """The call's message as it came, within the deadline; None when the call is refused."""
        task = asyncio.current_task()
        assert task is not None
        self._deadlines.watch(task, asyncio.get_running_loop().time() + self.timeout_s)
        try:
            raw = await context.read()
        except asyncio.CancelledError:
            if not self._deadlines.expired(task):
                raise
            task.uncancel()
            message = f"the request message did not arrive within {self.timeout_s:g} s"
            refuse(context, grpc.StatusCode.DEADLINE_EXCEEDED, message)
            return None
        finally:
            self._deadlines.forget(task)
        if raw is grpc.aio.EOF:
            refuse(context, grpc.StatusCode.INTERNAL, NO_MESSAGE)
            return None
        return raw

    def serving(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler`, a unary-request method (a coroutine), as a streaming-request one whose request is
        read here; any other handler as it is."""
        if handler.request_streaming:
            return handler
        parse, read = handler.request_deserializer, self.read
        method = handler.unary_stream if handler.response_streaming else handler.unary_unary

        async def serve(requests: object, context: grpc.aio.ServicerContext) -> Any:
            request = await read(context, parse)
            reply = None if request is None else await method(request, context)
            del request  # not held by the frame that ends a refused call (see the module's docstring)
            if reply is None and context.code() not in (None, grpc.StatusCode.OK):
                await context.abort(context.code(), context.details())
            return reply

        if handler.response_streaming:  # its replies are written by the method itself (Health.Watch)
            return grpc.stream_stream_rpc_method_handler(serve, None, handler.response_serializer)
        return grpc.stream_unary_rpc_method_handler(serve, None, handler.response_serializer)


def implemented(handler: grpc.RpcMethodHandler) -> bool:
    """Whether a servicer implements the method: on grpc.aio its methods are coroutines (a streaming
    answer written with context.write, as Health.Watch's), and what is not is the generated base
    class's stub for a method it lacks (Health's List), which raised NotImplementedError, logged with
    a traceback for every call. Left unregistered, such a method is answered UNIMPLEMENTED like any
    other the server does not serve, as gRPC C++ does."""
    behaviour = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    return inspect.iscoroutinefunction(behaviour)


class _Served(grpc.GenericRpcHandler):
    """A generic handler whose methods have their requests read by a RequestReader."""

    def __init__(self, handler: grpc.GenericRpcHandler, reader: RequestReader) -> None:
        self._handler, self._reader = handler, reader
        self._methods: dict[str, grpc.RpcMethodHandler] = {}  # only methods served, so bounded

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = self._methods.get(details.method)
        if method is None:
            found = self._handler.service(details)
            if found is None or not implemented(found):
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
        served = {name: handler for name, handler in handlers.items() if implemented(handler)}
        self._server.add_registered_method_handlers(
            service, {name: self._reader.serving(handler) for name, handler in served.items()}
        )
