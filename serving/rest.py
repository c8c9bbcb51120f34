"""The REST front door: TF Serving's `/v1/models/...` API over HTTP/1.1, on the shared Inference layer.

The standard library's threading HTTP server is enough here: one thread per connection with
keep-alive, the model call releasing the GIL, and every answer a small JSON document.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import unquote

import grpc

from serving.errors import ServingError, invalid_argument, not_found
from serving.in_flight import InFlight
from serving.inference import Inference

log = logging.getLogger("serving")

MAX_BODY_BYTES = 16 * 1024 * 1024
# Request bodies parsed and answered at once, in bytes. JSON numbers take several times their size as
# Python objects, so this bounds what REST requests hold in memory together (four bodies at the limit)
# however many clients connect; a request that does not fit waits, up to the socket timeout.
BODY_BUDGET_BYTES = 4 * MAX_BODY_BYTES


class ByteBudget:
    def __init__(self, total: int) -> None:
        self.free = total
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, size: int, timeout_s: float) -> Iterator[None]:
        with self._changed:
            if not self._changed.wait_for(lambda: self.free >= size, timeout_s):
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE, "the server is busy with other large requests; try again"
                )
            self.free -= size
        try:
            yield
        finally:
            with self._changed:
                self.free += size
                self._changed.notify_all()


# TF Serving's own patterns (tensorflow_serving/model_servers/http_rest_api_util.cc), matched whole.
PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)


class RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving's HTTP server
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm holds the second
    # until the client's delayed ACK, 40 ms later.
    disable_nagle_algorithm = True
    server: RestServer
    timeout: ClassVar[float]  # seconds a socket may stay silent; always set, per server (RestServer)

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._answer("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        self.server.requests.enter()
        try:
            self._respond(method)
        finally:
            self.server.requests.leave()

    def _respond(self, method: str) -> None:
        self._body_read = False
        try:
            status, payload, content_type = self._route(method)
        except ServingError as err:
            status, payload, content_type = (
                err.http_status,
                self._json({"error": err.message}),
                "application/json",
            )
        except Exception as err:  # the server answers, whatever went wrong
            log.exception("REST request %s %s failed", method, self.path)
            status, payload, content_type = (
                500,
                self._json({"error": f"internal error: {err}"}),
                "application/json",
            )
        if self.server.closing or (method in ("POST", "PUT") and not self._body_read):
            # After this answer nothing more on this connection: when closing, or when a body we did
            # not read would otherwise be taken for the next request.
            self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client went away; nobody is left to tell
            self.close_connection = True

    @staticmethod
    def _json(document: Any) -> bytes:
        return json.dumps(document).encode()

    def _route(self, method: str) -> tuple[int, bytes, str]:
        path = self.path.split("?", 1)[0]
        if method == "GET" and path == self.server.metrics_path and self.server.metrics is not None:
            return 200, self.server.metrics(), "text/plain; version=0.0.4; charset=utf-8"
        if not path.lower().startswith("/v1/"):
            raise not_found(f"Not found: {method} {path}")
        malformed = invalid_argument(f"Malformed request: {method} {path}")
        inference = self.server.inference
        if method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
            name, version, label, verb = match.groups()
            if verb not in ("predict", "classify", "regress"):  # the pattern ignores case, the API does not
                raise malformed
            spec = (_name(name), _version(version), _label(label))
            body = self._read_body(self._body_length())
            # Reserved once the body is in: a client that sends slowly holds only its own bytes.
            with self.server.bodies.reserve(len(body), self.timeout):
                if verb == "predict":
                    document = inference.predict_json(*spec, body)
                else:
                    document = inference.examples_json(verb, *spec, body)
                return 200, self._json(document), "application/json"
        if method == "GET" and (match := STATUS_PATH.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid_argument("Missing model name in request.")
            if metadata:
                document = inference.metadata_json(_name(name), _version(version), _label(label))
            elif self.server.draining():
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            else:
                document = inference.status_json(_name(name), _version(version))
            return 200, self._json(document), "application/json"
        raise malformed

    def _body_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise invalid_argument("chunked request bodies are not supported; send a Content-Length header")
        header = self.headers.get("Content-Length", "0")
        if not (header.isascii() and header.isdigit()):
            self.close_connection = True
            raise invalid_argument(f"Content-Length {header!r} is not a byte count")
        length = int(header)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be taken for the next request
            raise invalid_argument(
                f"request body of {length} bytes is over the limit of {MAX_BODY_BYTES} bytes"
            )
        return length

    def _read_body(self, length: int) -> bytes:
        try:
            body = self.rfile.read(length)
        except OSError:  # the socket timeout: a client that stopped sending
            body = b""
        if len(body) != length:
            self.close_connection = True
            raise invalid_argument(f"the body ended after {len(body)} of its {length} bytes")
        self._body_read = True
        return body

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the standard library's name)
        log.debug("REST %s", format % args)


def _name(text: str) -> str:
    return unquote(text)


def _label(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if len(text) > 18 or not text.isascii():
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return int(text)


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The standard library's default backlog of 5 drops and resets connections when clients arrive
    # together (a batch job opening its pool); the kernel caps this at net.core.somaxconn.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        address: tuple[str, int],
        inference: Inference,
        timeout_s: float,
        metrics: Callable[[], bytes] | None = None,
        metrics_path: str = "/monitoring/prometheus/metrics",
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        """`draining()`: the server is in its lame-duck period, and model status answers 503."""
        self.inference, self.metrics, self.metrics_path = inference, metrics, metrics_path
        self.draining = draining
        handler = type(
            "TimedRestHandler", (RestHandler,), {"timeout": timeout_s}
        )  # socket timeout per request
        self.closing = False
        self.bodies = ByteBudget(BODY_BUDGET_BYTES)
        self.requests = InFlight()  # a stop answers these first
        try:
            super().__init__(address, handler)
        except OSError as err:
            raise OSError(f"cannot listen for REST on {address[0]}:{address[1]}: {err.strerror}") from None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (reset, timed out, closed) is a debug line: nobody is left
        to answer, and socketserver's default, a traceback on stderr, would fill the server's log."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("REST client %s went away: %s", client_address, error)
        else:
            log.error("REST request from %s failed", client_address, exc_info=error)

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="rest", daemon=True)
        thread.start()
        return thread

    def stop(self, grace_s: float) -> None:
        """Stop accepting, answer the requests already in (closing their connections), then close."""
        self.closing = True
        self.shutdown()
        self.requests.wait_idle(grace_s)
        self.server_close()
