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

from serving.rest import RestApp


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools connection, with what it lacks against clients that never finish their
    headers: httptools buffers a header whole before handing it over, and uvicorn stops its idle
    timer at the first byte of a request. Here the line and headers of a request may take at most
    `max_header_bytes` (past it: 431, and the connection closed) and must be complete before the idle
    timer (--rest_api_timeout_in_ms) runs out, which now starts when the connection opens too."""

    max_header_bytes = 64 << 10

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0  # bytes received since the request's headers began
        self._in_headers = True
        self._headers_done = 0  # requests whose headers have ended, on this connection
        self._refused = False  # answered 431: the rest of what arrives is dropped
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if not self._in_headers:
            super().data_received(data)
            self._header_bytes = 0  # a request that began in this chunk is counted from the next
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

    def _refuse_headers(self) -> None:
        """431, and the connection closed: nothing more of it is read or answered."""
        self._refused = True
        if self.transport.is_closing():
            return
        message = f"the request line and headers are over {self.max_header_bytes} bytes".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
            + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(message)
            + message
        )
        self.transport.close()

    def on_headers_complete(self) -> None:
        """Headers that end in the chunk that brought them were not counted as they came: they are
        measured here, whole, before the request goes any further."""
        self._in_headers = False
        self._headers_done += 1
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if self._refused or size > self.max_header_bytes:
            self._refuse_headers()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()
        self._in_headers, self._header_bytes = True, 0


class RestServer(uvicorn.Server):
    """uvicorn on a socket bound here (so a taken port is an OSError at start, where uvicorn would exit
    the process), without uvicorn's signal handlers: the model server decides when to stop."""

    def __init__(
        self, host: str, port: int, app: RestApp, timeout_s: float, grace_s: float, max_header_bytes: int
    ) -> None:
        protocol = type("HttpProtocol", (GuardedHttpTools,), {"max_header_bytes": max_header_bytes})
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
