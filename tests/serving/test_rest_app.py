"""serving/rest.py's ASGI app in process: routing, bodies, errors and draining, over a fake Inference.

The process tests (test_rest.py) speak real HTTP to uvicorn; these pin down the app's own decisions
one request at a time, without a model or a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
import pytest

from serving.errors import invalid_argument, not_found
from serving.inference import Inference
from serving.limits import ByteBudget, Limits
from serving.rest import RestApp
from tests.conftest import run_coroutine

pytestmark = pytest.mark.fast


class FakeInference:
    """Answers with what it was asked, so a test sees how the app called the inference layer; records
    each request the app reports to the metrics as (model, door, API, status)."""

    def __init__(self) -> None:
        self.observations: list[tuple[str, str, str, str]] = []
        # The real layer's timing and status rule, reporting here (it needs no store for that).
        no_store: Any = None
        reporter = Inference(
            no_store,
            Limits(),
            observe=lambda name, door, api, code, _s: self.observations.append((name, door, api, code)),
        )
        self.observed = reporter.observed

    async def predict_json(self, name: str, version: int | None, label: str | None, body: bytes) -> Any:
        if name == "missing":
            raise not_found("Servable not found for request: Latest(missing)")
        if name == "half-a-pair":  # a refusal that quotes a character UTF-8 cannot hold
            raise invalid_argument('Serving signature name: "\udc00" not found in signature def')
        return {"predict": [name, version, label, body.decode()]}

    async def examples_json(
        self, verb: str, name: str, version: int | None, label: str | None, body: bytes
    ) -> Any:
        return {verb: [name, version, label]}

    def status_json(self, name: str, version: int | None) -> Any:
        return {"status": [name, version]}

    def metadata_json(self, name: str, version: int | None, label: str | None) -> Any:
        if name == "broken":
            raise RuntimeError("the store fell over")
        return {"metadata": [name, version, label]}


class Response:
    def __init__(self, messages: list[MutableMapping[str, Any]]) -> None:
        start, body = messages
        self.status: int = start["status"]
        self.headers = dict(start["headers"])
        self.body: bytes = body["body"]

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(
    app: RestApp,
    method: str,
    path: str,
    chunks: tuple[bytes, ...] = (b"",),
    disconnect: bool = False,
    query: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Response | None:
    """One request through the app: its body in `chunks`, or a client gone before the body arrived."""
    incoming: list[MutableMapping[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        incoming = [{"type": "http.disconnect"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": list(headers),
    }
    run_coroutine(app(scope, receive, send))
    return Response(sent) if sent else None


def make_app(
    draining: bool = False, timeout_s: float = 5.0, fake: FakeInference | None = None, cors: bool = False
) -> RestApp:
    inference: Any = fake or FakeInference()
    budget = ByteBudget(Limits().request_bytes)
    return RestApp(inference, budget, timeout_s, lambda: b"metric 1\n", "/metrics", lambda: draining, cors)


def test_every_v1_request_is_reported_with_tf_servings_labels() -> None:
    """TF Serving's REST door counts every /v1/ request: a POST under its verb, a GET (status, metadata)
    under the API label "", one whose path names no model under the model name ""; others not at all."""
    fake = FakeInference()
    app = make_app(fake=fake)
    for method, path in (
        ("POST", "/v1/models/mnist:predict"),
        ("POST", "/v1/models/missing:predict"),
        ("GET", "/v1/models/mnist"),
        ("GET", "/v1/models/mnist/versions/2/metadata"),
        ("GET", "/v1/nothing/here"),
        ("GET", "/metrics"),
        ("GET", "/elsewhere"),
    ):
        call(app, method, path)
    assert fake.observations == [
        ("mnist", "rest", "predict", "OK"),
        ("missing", "rest", "predict", "NOT_FOUND"),
        ("mnist", "rest", "", "OK"),
        ("mnist", "rest", "", "OK"),
        ("", "rest", "", "INVALID_ARGUMENT"),
    ]


def test_predict_routes_name_version_and_label_and_reads_a_chunked_body_whole() -> None:
    app = make_app()
    reply = call(app, "POST", "/v1/models/mnist/versions/3:predict", (b'{"in', b'stances"', b": [1]}"))
    assert reply is not None and reply.status == 200
    assert reply.json() == {"predict": ["mnist", 3, None, '{"instances": [1]}']}
    assert reply.headers[b"content-type"] == b"application/json"
    labelled = call(app, "POST", "/v1/models/my%20model/labels/can%2Fary:predict")
    assert labelled is not None and labelled.json()["predict"][:3] == ["my model", None, "can/ary"]
    assert app.bodies.free == app.bodies.total  # every body's bytes given back


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v2/models/mnist", 404, "Not found: GET /v2/models/mnist"),
        ("POST", "/v1/models/mnist:PREDICT", 400, "Malformed request: POST /v1/models/mnist:PREDICT"),
        ("PUT", "/v1/models/mnist", 400, "Malformed request: PUT /v1/models/mnist"),
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/mnist/versions/9223372036854775808", 400, "Failed to convert version"),
        ("POST", "/v1/models/missing:predict", 404, "Servable not found for request: Latest(missing)"),
        ("GET", "/v1/models/broken/metadata", 500, "internal error: the store fell over"),
        ("POST", "/v1/models/half-a-pair:predict", 400, 'Serving signature name: "\\udc00" not found'),
    ],
)
def test_refusals_carry_tf_servings_status_and_a_message(
    method: str, path: str, status: int, error: str
) -> None:
    reply = call(make_app(), method, path)
    assert reply is not None and reply.status == status
    assert reply.json()["error"].startswith(error)


def test_status_classify_metadata_and_metrics_are_routed() -> None:
    app = make_app()
    for path, expected in [
        ("/v1/models/mnist/versions/2", {"status": ["mnist", 2]}),
        ("/v1/models/mnist/labels/stable/metadata", {"metadata": ["mnist", None, "stable"]}),
    ]:
        reply = call(app, "GET", path)
        assert reply is not None and (reply.status, reply.json()) == (200, expected)
    classify = call(app, "POST", "/v1/models/mnist:classify", (b"{}",))
    assert classify is not None and classify.json() == {"classify": ["mnist", None, None]}
    for method in (
        "GET",
        "POST",
        "DELETE",
    ):  # the exporter's page answers any method (http_server.cc:233-238)
        metrics = call(app, method, "/metrics")
        assert metrics is not None and metrics.body == b"metric 1\n"
        assert metrics.headers[b"content-type"].startswith(b"text/plain; version=0.0.4")


@pytest.mark.parametrize(
    ("method", "path", "query", "status", "reason"),
    [
        ("TRACE", "/v1/models/mnist", b"", 501, "Not Implemented"),
        ("CONNECT", "/v1/models/mnist", b"", 501, "Not Implemented"),
        ("GET", "/v1/models/mn%zzist", b"", 400, "Bad Request"),
        ("GET", "/v1/models/mnist%2", b"", 400, "Bad Request"),
        ("GET", "/v1/models/{mnist}", b"", 400, "Bad Request"),
        ("POST", "/v1/models/mnist\u00e9:predict", b"", 400, "Bad Request"),
        ("GET", "/v1/models/mnist", b"a=[1]", 400, "Bad Request"),
        ("GET", "/metrics", b"a|b", 400, "Bad Request"),
    ],
)
def test_what_libevent_refuses_never_reaches_the_api(
    method: str, path: str, query: bytes, status: int, reason: str
) -> None:
    """TF Serving's HTTP server answers a method it does not allow with 501 and a target its strict URI
    parse refuses with 400, in libevent's own page, before any handler: nothing is counted."""
    fake = FakeInference()
    reply = call(make_app(fake=fake), method, path, query=query)
    assert reply is not None and reply.status == status
    page = (
        f"<HTML><HEAD>\n<TITLE>{status} {reason}</TITLE>\n</HEAD><BODY>\n<H1>{reason}</H1>\n</BODY></HTML>\n"
    )
    assert reply.body == page.encode()
    assert (reply.headers[b"content-type"], reply.headers[b"connection"]) == (b"text/html", b"close")
    assert fake.observations == []


def test_every_character_libevent_takes_in_a_target_reaches_the_api() -> None:
    """RFC 3986's unreserved characters, sub-delims, ':', '@', '/' and %XX escapes; '?' in the query."""
    reply = call(make_app(), "GET", "/v1/models/a!$&'()*+,;=@-._~%41z", query=b"q=?@!")
    assert reply is not None and reply.json() == {"status": ["a!$&'()*+,;=@-._~Az?q=?@!", None]}


def test_a_query_string_is_part_of_the_path_the_patterns_match() -> None:
    """TF Serving matches its /v1/ patterns against the path and query together, and its metrics
    exporter wants its path exactly (evhttp_request.cc:105-110,136; http_server.cc:90-97)."""
    app = make_app()
    status = call(app, "GET", "/v1/models/mnist", query=b"x=1")
    assert status is not None and status.json() == {"status": ["mnist?x=1", None]}
    predict = call(app, "POST", "/v1/models/mnist:predict", query=b"x=1")
    assert predict is not None and predict.status == 400
    assert predict.json() == {"error": "Malformed request: POST /v1/models/mnist:predict?x=1"}
    metrics = call(app, "GET", "/metrics", query=b"x=1")
    assert metrics is not None and metrics.status == 400
    assert metrics.body == b"Unexpected path: /metrics?x=1. Should be /metrics"


@pytest.mark.parametrize("cors", [False, True])
def test_a_cors_preflight_is_answered_and_cors_headers_sent_when_asked_for(cors: bool) -> None:
    """OPTIONS with an http(s) Origin is 200 with no body, without one a bare 400 (http_server.cc:
    170-177); --rest_api_enable_cors_support adds TF Serving's three headers to every /v1/ answer."""
    app = make_app(cors=cors)
    preflight = call(app, "OPTIONS", "/v1/models/mnist:predict", headers=((b"origin", b"https://a.example"),))
    assert preflight is not None and (preflight.status, preflight.body) == (200, b"")
    assert b"content-type" not in preflight.headers
    refused = call(app, "OPTIONS", "/v1/models/mnist:predict", headers=((b"origin", b"file:"),))
    assert refused is not None and (refused.status, refused.body) == (400, b"")
    status = call(app, "GET", "/v1/models/mnist")
    metrics = call(app, "GET", "/metrics")
    assert status is not None and metrics is not None
    for reply in (preflight, refused, status):
        assert (reply.headers.get(b"access-control-allow-origin") == b"*") == cors
        assert (reply.headers.get(b"access-control-allow-methods") == b"POST, GET") == cors
    assert b"access-control-allow-origin" not in metrics.headers


def test_while_draining_model_status_is_503_and_predictions_still_answer() -> None:
    app = make_app(draining=True)
    status = call(app, "GET", "/v1/models/mnist")
    assert status is not None and status.status == 503
    assert call(app, "POST", "/v1/models/mnist:predict", (b"{}",)) is not None


def test_a_client_gone_before_its_body_arrived_gets_no_answer_and_holds_no_bytes() -> None:
    fake = FakeInference()
    app = make_app(fake=fake)
    assert call(app, "POST", "/v1/models/mnist:predict", disconnect=True) is None
    assert app.bodies.free == app.bodies.total
    assert fake.observations == [("mnist", "rest", "predict", "CANCELLED")]  # not a server error


def test_versions_are_any_int64_and_only_metadata_in_lower_case_is_metadata() -> None:
    """As TF Serving parses the path: a version is any int64, leading zeros and all; the sub-resource
    is metadata only when spelt "metadata" (the pattern's case-blindness makes other spellings status)."""
    app = make_app()
    for path, expected in [
        ("/v1/models/mnist/versions/9223372036854775807", {"status": ["mnist", 2**63 - 1]}),
        ("/v1/models/mnist/versions/000000000000000000000003", {"status": ["mnist", 3]}),
        ("/v1/models/mnist/METADATA", {"status": ["mnist", None]}),
    ]:
        reply = call(app, "GET", path)
        assert reply is not None and (reply.status, reply.json()) == (200, expected), path


def test_of_two_large_bodies_that_do_not_fit_together_one_is_told_to_retry_at_once() -> None:
    """Two bodies of 80 bytes against a budget of 100, arriving in 10-byte chunks at the same time:
    each holds what it has received, and the one that finds no room is answered 429 at once, its
    connection closed, rather than both waiting on the other's bytes. The other is answered."""
    app = make_app(timeout_s=2.0)
    app.bodies = ByteBudget(100)
    body = b'{"instances": [' + b"1," * 31 + b"1]}"
    assert len(body) == 80

    async def request() -> MutableMapping[str, Any]:
        chunks = [body[i : i + 10] for i in range(0, len(body), 10)]
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            await asyncio.sleep(0)  # the other request runs between chunks
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        path = "/v1/models/mnist:predict"
        headers = [(b"content-length", str(len(body)).encode())]
        await app(
            {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "headers": headers},
            receive,
            send,
        )
        return sent[0]

    async def both() -> list[MutableMapping[str, Any]]:
        return list(await asyncio.gather(request(), request()))

    starts = sorted(run_coroutine(both()), key=lambda start: start["status"])
    assert [start["status"] for start in starts] == [200, 429]
    assert (b"connection", b"close") in starts[1]["headers"]
    assert app.bodies.free == 100


def test_a_body_with_no_room_in_the_budget_is_told_to_retry_and_holds_nothing() -> None:
    """A body that finds no room in the byte budget is 429 (RESOURCE_EXHAUSTED) at once: try again."""
    app = make_app()
    app.bodies = ByteBudget(100)

    async def scenario() -> MutableMapping[str, Any]:
        app.bodies.take(90)  # another request's body
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": b"{}" * 10, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        path = "/v1/models/mnist:predict"
        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode()}
        await app({**scope, "headers": [(b"content-length", b"20")]}, receive, send)
        return sent[0]

    start = run_coroutine(scenario())
    assert start["status"] == 429 and (b"connection", b"close") in start["headers"]
    assert app.bodies.free == 10


def post_stalling(
    app: RestApp, declared: int, sent_chunks: list[bytes], replies: list[MutableMapping[str, Any]]
) -> Any:
    """A POST stating `declared` bytes that sends `sent_chunks` and then nothing more, ever."""

    async def receive() -> MutableMapping[str, Any]:
        if sent_chunks:
            return {"type": "http.request", "body": sent_chunks.pop(0), "more_body": True}
        await asyncio.Event().wait()  # a client that never sends the rest
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        replies.append(message)

    path = "/v1/models/mnist:predict"
    headers = [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "headers": headers}
    return app(scope, receive, send)


def test_a_stated_body_that_never_arrives_holds_no_budget_and_times_out_with_a_close() -> None:
    """A client stating the whole budget's length and sending nothing holds none of it, and one that
    sent a few bytes of a larger body holds those few. A stalled body, sent or not, is 408 with the
    connection closed once the request timeout has passed, its bytes given back."""
    app = make_app(timeout_s=0.5)
    app.bodies = ByteBudget(100)
    silent: list[MutableMapping[str, Any]] = []
    trickle: list[MutableMapping[str, Any]] = []

    async def scenario() -> None:
        stalled = asyncio.create_task(post_stalling(app, 100, [], silent))
        started = asyncio.create_task(post_stalling(app, 60, [b'{"inst'], trickle))
        await asyncio.sleep(0.1)
        assert app.bodies.free == 100 - len(b'{"inst')  # what has arrived, not what was stated
        await asyncio.gather(stalled, started)

    run_coroutine(scenario())
    for replies in (silent, trickle):
        start = replies[0]
        assert start["status"] == 408 and (b"connection", b"close") in start["headers"]
        assert b"did not arrive within 0.5 s" in replies[1]["body"]
    assert app.bodies.free == 100
