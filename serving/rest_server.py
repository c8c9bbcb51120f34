"""The REST door's HTTP server: uvicorn on the model server's own loop, with a connection protocol
that bounds what clients that never finish their headers may hold. What it serves is the ASGI app in
serving/rest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.limits import Limits
from serving.rest import RestApp

LINGER_S = 2.0  # how long a refused connection's bytes are still read, so that it gets its answer


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools connection, with what it lacks against clients that hold it open or make it
    hold memory:
    - httptools buffers a header whole before handing it over, and uvicorn stops its idle timer at the
      first byte of a request. Here the line and headers of a request may take at most
      `max_header_bytes` (past it: 431, and the connection closed) and must be complete before the idle
      timer (--rest_api_timeout_in_ms) runs out, which now starts when the connection opens too.
    - A chunked body's trailers and framing are held to the same `max_header_bytes`, and trailers are
      not kept: uvicorn would add each to the request's headers.
    - Pipelined requests: uvicorn queues every request a read brings while one is answered, and reads
      again after each answer. Here an answer does not start another read while requests are still
      waiting, and once `max_pipelined` wait, what follows is dropped unread and the connection is
      closed after their answers.
    - A request answered before its body has all arrived closes its connection (`connection: close`):
      uvicorn would read and drop the rest, and every byte would restart the idle timer.
    - At most `max_connections` connections: one more is answered 503 (when it reads) and closed.
    A refusal is written only when it is the next answer due; with answers still owed to earlier
    requests on the connection, they are given and the connection closed after them instead."""

    max_header_bytes = 64 << 10
    max_pipelined = 64
    max_connections = 4096

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0  # bytes received since the request's headers began
        self._in_headers = True
        self._headers_done = 0  # requests whose headers have ended, on this connection
        self._refused = False  # answered 431: the rest of what arrives is dropped
        self._draining = False  # too many requests pipelined: the rest is dropped, then closed
        self._framing_bytes = 0  # a chunked body's bytes since its last data: framing, trailers
        self._trailer_bytes = 0  # the trailers of this request's chunked body
        self._bodied = False  # the last read brought body bytes
        self._keep_alive = True  # the keep-alive of the request whose body is arriving
        self._shutting_down = False
        if len(self.connections) > self.max_connections:
            why = f"over {self.max_connections} connections are open"
            self._refuse(503, "Service Unavailable", why, linger=False)  # its descriptor freed at once
            return
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if self._draining or self._refused:
            return
        if not self._in_headers:
            self._bodied = False
            super().data_received(data)
            self._header_bytes = 0  # a request that began in this chunk is counted from the next
            if self._in_headers or self._bodied:
                self._framing_bytes = 0
            else:  # a read of a chunked body with no data in it: chunk framing or trailers
                self._framing_bytes += len(data)
                if self._framing_bytes > self.max_header_bytes:
                    self._refuse_headers(own=True)
            return
        deadline = self.timeout_keep_alive_task  # kept until the headers are complete
        self.timeout_keep_alive_task = None
        done = self._headers_done
        super().data_received(data)
        if self._headers_done != done:
            # A request's headers ended in this chunk, and maybe its body and the request itself too
            # (then the parser waits for the next one's headers again): none of it counts against the
            # next request, which is counted from the next chunk.
            if deadline is not None:
                deadline.cancel()
            self._header_bytes = 0
            return
        self.timeout_keep_alive_task = self.timeout_keep_alive_task or deadline
        self._header_bytes += len(data)
        if self._header_bytes > self.max_header_bytes:
            self._refuse_headers()

    def _refuse_headers(self, own: bool = False) -> None:
        why = f"the request's header fields are over {self.max_header_bytes} bytes"
        self._refuse(431, "Request Header Fields Too Large", why, own=own)

    def _refuse(self, status: int, reason: str, why: str, linger: bool = True, own: bool = False) -> None:
        """An answer in plain text, and the connection closed: nothing more of it is read or answered.
        `own`: the refused request is the last one whose headers were read (its trailers, its body's
        framing), whose app then hears the client gone and has what it sends dropped. With `linger`,
        what the client is still sending is read and dropped for LINGER_S after the answer, which ends
        the server's side: closing with bytes unread would reset the connection, and the client could
        lose the answer."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        if own:
            self.cycle.disconnected = True
            self.cycle.message_event.set()  # its app, waiting for more body, hears it now
            if self.pipeline:  # it waits behind an answer in progress, which this would overtake
                self.transport.close()
                return
        elif self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            newest = self.pipeline[0][0] if self.pipeline else self.cycle
            newest.keep_alive = False  # the answers owed are given, then the connection closes
            return
        message = why.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\n" % (status, reason.encode())
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(message)
            + message
        )
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def on_headers_complete(self) -> None:
        """Headers that end in the chunk that brought them were not counted as they came: they are
        measured here, whole, before the request goes any further."""
        self._in_headers = False
        self._headers_done += 1
        if self._draining:
            return
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if self._refused or size > self.max_header_bytes:
            self._refuse_headers()
            return
        super().on_headers_complete()
        # Until the body has all arrived, an answer closes the connection (uvicorn then says so); the
        # request's own keep-alive is given back when it has, unless its answer has begun already.
        self._keep_alive, self.cycle.keep_alive = self.cycle.keep_alive, False

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header field; after the headers, a chunked body's trailer: counted, and dropped."""
        if self._in_headers:
            super().on_header(name, value)
            return
        if self._refused:
            return
        self._trailer_bytes += len(name) + len(value) + 4
        if self._trailer_bytes > self.max_header_bytes:
            self._refuse_headers(own=True)

    def on_body(self, body: bytes) -> None:
        self._bodied = True
        if not (self._refused or self._draining):
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not (self._refused or self._draining):
            super().on_message_complete()
            if not (self.cycle.response_started or self._shutting_down):
                self.cycle.keep_alive = self._keep_alive
        self._in_headers, self._header_bytes, self._framing_bytes, self._trailer_bytes = True, 0, 0, 0
        if len(self.pipeline) >= self.max_pipelined:
            self._draining = True
            self.pipeline[0][0].keep_alive = False  # the newest waiting: its answer closes the connection

    def shutdown(self) -> None:
        """The server is stopping: no request's keep-alive is given back from now on."""
        self._shutting_down = True
        super().shutdown()

    def on_response_complete(self) -> None:
        """uvicorn reads again after each answer; with requests still queued, that would only queue more."""
        super().on_response_complete()
        if self.pipeline and not self.transport.is_closing():
            self.flow.pause_reading()


class RestServer(uvicorn.Server):
    """uvicorn on a socket bound here (so a taken port is an OSError at start, where uvicorn would exit
    the process), without uvicorn's signal handlers: the model server decides when to stop."""

    def __init__(
        self, host: str, port: int, app: RestApp, timeout_s: float, grace_s: float, limits: Limits
    ) -> None:
        protocol = type(
            "HttpProtocol",
            (GuardedHttpTools,),
            {
                "max_header_bytes": limits.rest_header_bytes,
                "max_pipelined": limits.rest_pipelined,
                "max_connections": limits.rest_connections,
            },
        )
        config = uvicorn.Config(
            app,
            loop="none",  # the model server's loop, shared with gRPC
            http=protocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=False,
            # TF Serving reads no X-Forwarded-* header, and the server uses no client address: uvicorn's
            # rewriting of them costs every request for nothing.
            proxy_headers=False,
            # Idle connections are closed after this, and so are requests whose headers take longer.
            timeout_keep_alive=max(1, math.ceil(timeout_s)),  # 0 would close every connection at once
            timeout_graceful_shutdown=int(grace_s),
            backlog=socket.SOMAXCONN,  # clients that arrive together (a batch job opening its pool)
        )
        super().__init__(config)
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as err:
            self.socket.close()
            raise OSError(f"cannot listen for REST on {host}:{port}: {err.strerror}") from None
        self.socket.listen(socket.SOMAXCONN)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def start(self) -> asyncio.Task[None]:
        """Serve on the running loop until `stop`; connections wait in the backlog meanwhile."""
        return asyncio.get_running_loop().create_task(self.serve(sockets=[self.socket]))

    async def stop(self, serving: asyncio.Task[None]) -> None:
        """Stop accepting, finish the requests in flight (up to the grace period), close connections."""
        self.should_exit = True
        await serving
