"""ServingClient against servers that misbehave (a port that is no TF Serving's, a hostile one): every
call ends in time with one clean ServingClientError, and holds bounded memory. The servers are raw
sockets in this process, scripted to answer as such servers do."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from client import ServingClient, ServingClientError, rest_transport

Script = Callable[[socket.socket], None]


@contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """http://127.0.0.1:PORT of a server that reads each request's head and then runs `script` on its
    connection, on a thread of its own."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                try:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += connection.recv(65536) or b"\r\n\r\n"
                    script(connection)
                except OSError:
                    pass  # the client gave up: what this test wanted

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def answering(status: str, body: bytes, content_type: bytes = b"application/json") -> Script:
    def script(connection: socket.socket) -> None:
        connection.sendall(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode()
            + b"Content-Type: "
            + content_type
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )

    return script


def trickling(connection: socket.socket) -> None:
    """Headers, then a body a byte at a time, each within any per-read timeout."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(100):
        connection.sendall(b" ")
        time.sleep(0.1)


def trickling_headers(connection: socket.socket) -> None:
    """A status line, then header lines without end, a byte at a time, each within any per-read
    timeout: http.client reads headers a line at a time."""
    connection.sendall(b"HTTP/1.1 200 OK\r\n")
    for byte in b"X-Slow: a\r\n" * 20:
        connection.sendall(bytes([byte]))
        time.sleep(0.05)


def endless(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[")
    while True:
        connection.sendall(b"1," * 65536)


def refusal(
    client: ServingClient, call: Callable[[ServingClient], object] | None = None
) -> ServingClientError:
    with pytest.raises(ServingClientError) as raised:
        (call or (lambda c: c.predict(np.zeros((28, 28)), version=1)))(client)
    assert "\n" not in str(raised.value) and "\x1b" not in str(raised.value)
    return raised.value


def test_an_answer_trickling_in_ends_at_the_timeout() -> None:
    """requests' timeout bounds each read alone: a byte a second would hold the call for ever."""
    with scripted_server(trickling) as url:
        started = time.monotonic()
        error = refusal(ServingClient.rest(url, timeout=1, retries=0))
    assert error.status == "DEADLINE_EXCEEDED" and time.monotonic() - started < 3


@pytest.mark.parametrize("call", [lambda c: c.predict(np.zeros((28, 28)), version=1), lambda c: c.status()])
def test_headers_trickling_in_end_at_the_timeout(call: Callable[[ServingClient], object]) -> None:
    """The wait for the answer's headers is bounded too, not each read alone."""
    with scripted_server(trickling_headers) as url:
        started = time.monotonic()
        error = refusal(ServingClient.rest(url, timeout=1, retries=0), call)
        assert error.status == "DEADLINE_EXCEEDED" and time.monotonic() - started < 2


def test_an_endless_answer_is_refused_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_transport, "MAX_ANSWER_BYTES", 1 << 20)
    with scripted_server(endless) as url:
        error = refusal(ServingClient.rest(url, timeout=10, retries=0))
    assert error.status == "UNKNOWN" and "more than 1 MB" in error.message


def test_a_servers_words_reach_the_terminal_without_control_characters() -> None:
    evil = json.dumps({"error": "evil\u001b[2J\nsecond line"}).encode()
    with scripted_server(answering("400 Bad Request", evil)) as url:
        error = refusal(ServingClient.rest(url, retries=0))
    assert error.status == "INVALID_ARGUMENT" and error.message == "evil\\x1b[2J\\nsecond line"


def test_a_grpc_port_given_as_rest_is_named_as_such() -> None:
    """A gRPC server answers HTTP/1.1 with HTTP/2's first frame (a SETTINGS frame, bytes 0-8 binary)."""

    def http2(connection: socket.socket) -> None:
        connection.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64")

    with scripted_server(http2) as url:
        error = refusal(ServingClient.rest(url, retries=0))
    assert "does not speak HTTP/1.1 (is that the gRPC port? use --grpc)" in error.message


@pytest.mark.parametrize(
    ("probabilities", "words"),
    [
        ([[0.1] * 10, [0.1] * 10], "of shape [2, 10] for 1 image(s), expected [1, 10]"),
        ([[0.5, 0.5]], "of shape [1, 2] for 1 image(s), expected [1, 10]"),
        ([[float("nan")] * 10], "NaN or infinite probabilities"),
    ],
    ids=["two-rows-for-one-image", "two-classes", "nan"],
)
def test_answers_no_digit_can_be_read_from_are_errors(probabilities: list[list[float]], words: str) -> None:
    body = json.dumps({"outputs": {"probabilities": probabilities}}).encode()
    with scripted_server(answering("200 OK", body)) as url:
        error = refusal(ServingClient.rest(url, retries=0))
    assert error.status == "UNKNOWN" and words in error.message


def test_names_are_escaped_in_rest_paths() -> None:
    """`../etc` names a model and `a/b?c` a label, not other paths (TF Serving decodes the escapes)."""
    path = rest_transport.RestTransport("http://localhost:8501")._path("../etc", None, "a/b?c")
    assert path == "http://localhost:8501/v1/models/..%2Fetc/labels/a%2Fb%3Fc"


def no_probabilities(reply: Any) -> None:
    reply.outputs["logits"].float_val.extend([0.1] * 10)


def a_shape_past_64_bits(reply: Any) -> None:
    """No values, and dimensions whose product wraps around to 0 in int64."""
    probabilities = reply.outputs["probabilities"]
    probabilities.dtype = 1  # DT_FLOAT
    probabilities.tensor_shape.dim.add(size=2**62)
    probabilities.tensor_shape.dim.add(size=4)


@pytest.mark.parametrize(
    ("fill", "words"),
    [
        (no_probabilities, "answered no float 'probabilities' output"),
        (a_shape_past_64_bits, "a tensor of shape [4611686018427387904, 4] that its values do not fill"),
    ],
    ids=["no-probabilities", "shape-past-64-bits"],
)
def test_a_grpc_answer_no_digit_can_be_read_from_is_an_error(fill: Callable[[Any], None], words: str) -> None:
    """A server of another model (or of none of TF Serving's) answering Predict."""
    from concurrent import futures

    import grpc

    from tfs_api.tensorflow_serving.apis import predict_pb2

    def predict(request: bytes, context: object) -> bytes:
        reply = predict_pb2.PredictResponse()
        fill(reply)
        return reply.SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService", {"Predict": grpc.unary_unary_rpc_method_handler(predict)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(1), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        error = refusal(ServingClient.grpc(f"127.0.0.1:{port}", retries=0))
    finally:
        server.stop(None)
    assert error.status == "UNKNOWN" and words in error.message


def test_an_answer_nested_past_pythons_stack_is_one_error() -> None:
    with scripted_server(answering("200 OK", b"[" * 100_000)) as url:
        error = refusal(ServingClient.rest(url, retries=0))
    assert "did not answer as a TF Serving REST API" in error.message


@pytest.mark.parametrize(
    ("make", "target"),
    [
        (ServingClient.grpc, "localhost"),
        (ServingClient.grpc, "http://localhost:8500"),
        (ServingClient.rest, "localhost:8501"),
        (ServingClient.rest, "ftp://localhost"),
    ],
)
def test_an_address_of_the_wrong_form_is_a_value_error_at_once(
    make: Callable[..., ServingClient], target: str
) -> None:
    with pytest.raises(ValueError, match="such as"):
        make(target)
    assert ServingClient.grpc("unix:/run/tfs.sock").transport is not None  # gRPC's own schemes pass
