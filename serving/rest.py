"""The REST front door: TF Serving's `/v1/models/...` API as an ASGI app, served by uvicorn
(serving/rest_server.py).

uvicorn (httptools' parser, keep-alive, chunked bodies, graceful shutdown) runs on the model server's
event loop beside grpc.aio; this module only routes, reads bodies within a byte budget and answers
JSON (orjson) from the shared Inference layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import grpc
import orjson

from serving.deadlines import Deadlines
from serving.errors import ServingError, invalid_argument, not_found
from serving.inference import Inference
from serving.inflate import GZIP, inflated
from serving.limits import ByteBudget

log = logging.getLogger("serving")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = (b"content-type", b"application/json")
PROMETHEUS = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
TEXT = (b"content-type", b"text/plain")
# With --rest_api_enable_cors_support, on every /v1/ answer (http_rest_api_util.cc:40-44).
CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]

# TF Serving's own patterns (tensorflow_serving/model_servers/http_rest_api_util.cc), matched whole.
PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)

# What TF Serving's HTTP server (libevent) answers before any handler sees a request: methods other than
# these get 501 (evhttp_server.cc:114-117; libevent http.c:3481-3485), and a target that libevent's
# strict URI parse refuses gets 400 (evhttp_request.cc:94-97, evhttp_server.cc:132-134): a path of
# RFC 3986's unreserved characters, sub-delims, ':', '@', '/' and %XX escapes; a query of those and
# '?' (libevent http.c:4711-4745, 4834-4845).
LIBEVENT_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})
_URI_PATH = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_URI_QUERY = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")


class ClientGone(ConnectionError):
    """The client closed its connection before its body arrived: nobody is left to answer."""


class BodyTimeout(TimeoutError):
    """The client did not send its whole body in time: answered 408, and its connection closed."""


class BodyRefused(ServingError):
    """The body may not be read on (over the budget): answered now, the rest left unread, and the
    connection closed so that the client stops sending it."""


class BareRefusal(ServingError):
    """A refusal TF Serving answers with its status alone: no body, no Content-Type (a CORS preflight
    without an origin)."""


class RestApp:
    """The ASGI application: one call per HTTP request."""

    def __init__(
        self,
        inference: Inference,
        bodies: ByteBudget,
        timeout_s: float,
        metrics: Callable[[], bytes] | None,
        metrics_path: str,
        draining: Callable[[], bool],
        cors: bool = False,
    ) -> None:
        """`bodies`: the request bytes the server may hold, shared with gRPC; `metrics()`: the Prometheus
        exposition, served at `metrics_path` (None: off); `draining()`: the server is in its lame-duck
        period, and model status answers 503; `cors`: CORS headers on every /v1/ answer."""
        self.inference, self.bodies, self.timeout_s = inference, bodies, timeout_s
        self.metrics, self.metrics_path, self.draining = metrics, metrics_path, draining
        self.cors = cors
        self._deadlines = Deadlines.for_timeout(timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # uvicorn runs with lifespan off and no websockets
            return
        method = scope["method"]
        raw_path, raw_query = scope.get("raw_path", scope["path"].encode()), scope.get("query_string", b"")
        if method not in LIBEVENT_METHODS:
            await _libevent_page(send, 501, "Not Implemented")
            return
        if not (_URI_PATH.fullmatch(raw_path) and _URI_QUERY.fullmatch(raw_query)):
            await _libevent_page(send, 400, "Bad Request")
            return
        # The path as sent, still percent-encoded: the patterns split it first, then names are decoded.
        # TF Serving matches its /v1/ patterns against the path and the query string together
        # (evhttp_request.cc:105-110,136), so `/v1/models/m?x=1` names a model "m?x=1".
        path, query = raw_path.decode("latin-1"), raw_query.decode("latin-1")
        path_and_query = f"{path}?{query}" if query else path
        header: tuple[bytes, bytes] | None = JSON
        body, closing = b"", False
        try:
            status, header, body = await self._route(method, path, path_and_query, scope, receive)
        except ClientGone:
            log.debug("REST client went away before its request arrived: %s %s", method, path)
            return
        except BodyTimeout as err:
            close = (b"connection", b"close")  # what is left of its body is not read
            body = _error_json(str(err))
            length = (b"content-length", str(len(body)).encode())
            await send({"type": "http.response.start", "status": 408, "headers": [JSON, length, close]})
            await send({"type": "http.response.body", "body": body})
            return
        except BareRefusal as err:
            status, header = err.http_status, None
        except ServingError as err:
            status, body = err.http_status, _error_json(err.message)
            closing = isinstance(err, BodyRefused)
        except Exception as err:  # the server answers, whatever went wrong
            log.exception("REST request %s %s failed", method, path)
            status, body = 500, _error_json(f"internal error: {err}")
        # A client that has gone away by now is a debug line of uvicorn's, not an error: nobody to tell.
        headers = [(b"content-length", str(len(body)).encode())]
        if header is not None:
            headers.append(header)
        if self.cors and path.lower().startswith("/v1/"):
            headers += CORS
        if closing:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(
        self, method: str, path: str, path_and_query: str, scope: Scope, receive: Receive
    ) -> tuple[int, tuple[bytes, bytes] | None, bytes]:
        # The exporter's page answers any method (http_server.cc:233-238 registers it for the path alone).
        if path == self.metrics_path and self.metrics is not None:
            if path_and_query != path:  # the exporter wants its path exactly (http_server.cc:96-98)
                unexpected = f"Unexpected path: {path_and_query}. Should be {path}"
                return 400, TEXT, unexpected.encode()
            return 200, PROMETHEUS, self.metrics()
        if not path.lower().startswith("/v1/"):
            raise not_found(f"Not found: {method} {path}")
        name, api = _model_and_api(method, path_and_query)
        with self.inference.observed(name, "rest", api):  # every /v1/ request, as TF Serving counts them
            if method == "OPTIONS":  # a CORS preflight, answered with no body (http_server.cc:170-177)
                if not re.search(r"https?://", _header(scope, b"origin")):
                    raise BareRefusal(
                        grpc.StatusCode.FAILED_PRECONDITION, "Origin header is missing in CORS preflight"
                    )
                return 200, None, b""
            return await self._v1(method, path_and_query, scope, receive)

    async def _v1(
        self, method: str, path: str, scope: Scope, receive: Receive
    ) -> tuple[int, tuple[bytes, bytes] | None, bytes]:
        inference = self.inference
        if method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
            name, version, label, verb = match.groups()
            if verb not in ("predict", "classify", "regress"):  # the pattern ignores case, the API does not
                raise _malformed(method, path)
            spec = (unquote(name), _version(version), None if label is None else unquote(label))
            async with self._body(scope, receive) as body:
                if verb == "predict":
                    document = await inference.predict_json(*spec, body)
                else:
                    document = await inference.examples_json(verb, *spec, body)
            return 200, JSON, orjson.dumps(document)
        if method == "GET" and (match := STATUS_PATH.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid_argument("Missing model name in request.")
            if metadata == "metadata":  # any other case is status, as TF Serving matches it exactly
                label = None if label is None else unquote(label)
                document = inference.metadata_json(unquote(name), _version(version), label)
            elif self.draining():
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            else:
                document = inference.status_json(unquote(name), _version(version))
            return 200, JSON, orjson.dumps(document)
        raise _malformed(method, path)

    @contextlib.asynccontextmanager
    async def _body(self, scope: Scope, receive: Receive) -> AsyncIterator[bytes]:
        """The body, its bytes taken from the server's request budget as they arrive and given back
        once the request has been answered: a client that states a length and sends little holds only
        what it sent. A body that would pass the budget is refused at once (400 when it could never fit,
        429 while others hold too much), unread. The whole body must arrive within the request timeout
        (--rest_api_timeout_in_ms): a client that stalls, or never ends its chunks, is answered 408.
        Either way the connection is closed, so the client stops sending."""
        declared = _content_length(scope)
        held, chunks = 0, []
        task = asyncio.current_task()
        assert task is not None
        try:
            try:
                if declared is not None and declared > self.bodies.limit_for(declared):
                    self.bodies.take(declared)  # refused whole, before any of it is read
                self._deadlines.watch(task, asyncio.get_running_loop().time() + self.timeout_s)
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    self.bodies.take(len(chunk), held)
                    held += len(chunk)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
            except ServingError as err:  # from the budget: the rest of the body is not read
                raise BodyRefused(err.code, err.message) from None
            self._deadlines.forget(task)
            body = b"".join(chunks)
            chunks.clear()  # the body alone is held from here on, not its chunks too
            # TF Serving inflates a body whose Content-Encoding says gzip (evhttp_request.cc:182-183,
            # 261-266); here within the budget, which holds the inflated bytes too.
            if "gzip" in _header(scope, b"content-encoding"):
                try:
                    body = await inflated(body, GZIP, self.bodies, held)
                except zlib.error as err:
                    raise invalid_argument(f"the request body is not whole gzip data: {err}") from None
                held += len(body)
            yield body
        except asyncio.CancelledError:
            if not self._deadlines.expired(task):
                raise
            task.uncancel()
            raise BodyTimeout(f"the request body did not arrive within {self.timeout_s:g} s") from None
        finally:
            self._deadlines.forget(task)
            self.bodies.give_back(held)


def _error_json(message: str) -> bytes:
    """A refusal's JSON body. A message that quotes half a UTF-16 surrogate pair, which UTF-8 cannot
    hold, has it written as a \\u escape: a refusal is never a 500 for the words it quotes."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:
        return orjson.dumps({"error": message.encode("utf-8", "backslashreplace").decode()})


async def _libevent_page(send: Send, status: int, reason: str) -> None:
    """libevent's own error page (evhttp_send_error, http.c:2801-2828), as TF Serving's HTTP server
    sends it for a request that never reaches a handler, with the connection closed
    (evhttp_send_page_, http.c:3062-3077)."""
    page = (
        f"<HTML><HEAD>\n<TITLE>{status} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n"
    )
    body = page.encode()
    headers = [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]}
    )
    await send({"type": "http.response.body", "body": body})


def _model_and_api(method: str, path: str) -> tuple[str, str]:
    """The model name and API label TF Serving's metrics give a REST request: the verb of a POST
    (`predict`, ...), "" for a GET (status, metadata); no name when the path names none."""
    if method == "POST" and (match := PREDICT_PATH.fullmatch(path)):
        return unquote(match[1]), match[4]
    if method == "GET" and (match := STATUS_PATH.fullmatch(path)):
        return unquote(match[1] or ""), ""
    return "", ""


def _malformed(method: str, path: str) -> ServingError:
    return invalid_argument(f"Malformed request: {method} {path}")


def _content_length(scope: Scope) -> int | None:
    """The body's length as its Content-Length header states it (the HTTP parser has checked that the
    body is that long); None for a chunked body."""
    length = _header(scope, b"content-length")
    return int(length) if length else None


def _header(scope: Scope, name: bytes) -> str:
    """A request header's value (the first, if sent twice), "" when it is not sent."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


def _version(text: str | None) -> int | None:
    """A version from the path (digits only, as the patterns match them): any int64, as TF Serving's
    own conversion takes."""
    if text is None:
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > 19 or int(digits) >= 2**63:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return int(digits)
