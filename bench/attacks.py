"""The hostile-client drill's attacks, which bench/drill.py runs in the order of ATTACKS: each bounded in
count and time, each returning what the server answered and raising AttackFailed when that was wrong. Those
over HTTP/1.1 and through gRPC's own client are here; those that frame HTTP/2 by hand are in
bench/http2_attacks.py, and the target they share in bench/drill_target.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import requests

from bench.drill_target import PREDICT, TIMEOUT_MS, AttackFailed, Server, expect
from bench.http2_attacks import compression_bomb, empty_calls, frame_floods, rapid_reset, stalled_calls
from client import ServingClient
from serving.limits import ByteBudget, Limits
from tfs_api.tensorflow.core.framework import types_pb2
from tfs_api.tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc, predict_pb2


def rest_post(server: Server, path: str, body: bytes) -> requests.Response:
    return requests.post(server.rest + path, data=body, timeout=60)


def image_rows(image: np.ndarray, count: int) -> bytes:
    """A REST predict body of `count` copies of the image, as rows: built by joining, not by json."""
    row = json.dumps(image[0].round(3).tolist()).encode()
    return b'{"instances": [' + b",".join([row] * count) + b"]}"


def large_json(server: Server, image: np.ndarray) -> str:
    body = image_rows(image, 17_300)  # about 120 MB
    reply = rest_post(server, "/v1/models/mnist:predict", body)
    # 400 with the compose flags: more images than a batch (64) may hold, refused once parsed.
    expect(reply.ok or (reply.status_code == 400 and "Task size" in reply.text), reply.text[:200])
    return f"{len(body) >> 20} MiB of JSON: {reply.status_code} {reply.text[:80]!r}"


def stalled_bodies(server: Server, image: np.ndarray) -> str:
    small = image_rows(image, 1)
    largest = ByteBudget(Limits().request_bytes).largest  # the largest body the server would read
    with (
        socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as stated,
        socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as chunked,
    ):
        stated.sendall(
            b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{" % largest
        )
        chunked.sendall(
            b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        codes = [rest_post(server, "/v1/models/mnist:predict", small).status_code for _ in range(20)]
        expect(codes == [200] * 20, f"other predictions got {codes}")
        deadline = time.monotonic() + TIMEOUT_MS / 1000 + 5
        chunked.settimeout(0.1)
        while time.monotonic() < deadline:  # a body that never ends: a chunk every 100 ms
            try:
                chunked.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
                if chunked.recv(65536):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        stated.settimeout(10)
        answer = stated.recv(65536)
    expect(answer.startswith(b"HTTP/1.1 408"), f"a stalled body got {answer[:40]!r}")
    stalled = f"a {largest >> 20} MiB body stalled after 1 byte, a chunked one never ending"
    return f"{stalled}: 408 and closed; 20 others 200"


def empty_batches(server: Server, image: np.ndarray) -> str:
    client = ServingClient.grpc(f"127.0.0.1:{server.grpc_port}", retries=0, timeout=10)
    answers = [len(client.predict(image[:0])) for _ in range(2000)]
    expect(set(answers) == {0}, f"empty batches were answered {set(answers)}")
    return "2000 gRPC predicts of shape [0,28,28,1]: empty answers"


def unknown_names(server: Server, image: np.ndarray) -> str:
    body = image_rows(image, 1)
    with requests.Session() as session:
        codes = {
            session.post(f"{server.rest}/v1/models/x{i}:predict", data=body, timeout=10).status_code
            for i in range(2000)
        }
    expect(codes == {404}, f"unknown names got {codes}")
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for i in range(50):
            request = _predict_request(image, name=f"{i}" + "n" * 100_000)
            try:
                channel.unary_unary(PREDICT)(request, timeout=10)
            except grpc.RpcError as err:
                expect(err.code() == grpc.StatusCode.NOT_FOUND, str(err.code()))
    page = requests.get(f"{server.rest}/monitoring/prometheus/metrics", timeout=10).text
    expect(len(page) < 256 << 10, f"the metrics page is {len(page)} bytes")
    return f"2000 unknown names (REST), 50 of 100 KB (gRPC): 404 / NOT_FOUND; metrics page {len(page)} B"


def _predict_request(image: np.ndarray, name: str = "mnist", content: bytes | None = None) -> bytes:
    """A serialized PredictRequest, built without TensorFlow: float32 images as tensor_content."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    tensor = request.inputs["images"]
    tensor.dtype = types_pb2.DT_FLOAT
    data = image.astype(np.float32).tobytes() if content is None else content
    for size in (len(data) // (28 * 28 * 4), 28, 28, 1):
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = data
    return request.SerializeToString()


def huge_grpc(server: Server, image: np.ndarray) -> str:
    request = _predict_request(image, content=bytes(300 << 20))
    codes = []

    def send(_: int) -> None:
        with grpc.insecure_channel(
            f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_send_message_length", -1)]
        ) as channel:
            try:
                channel.unary_unary(PREDICT)(request, timeout=60)
                codes.append("OK")
            except grpc.RpcError as err:
                codes.append(err.code().name)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(send, range(6)))
    expect(set(codes) == {"RESOURCE_EXHAUSTED"}, f"300 MB predicts got {codes}")
    return "6 concurrent gRPC predicts of 300 MB: RESOURCE_EXHAUSTED"


def reload_calls(server: Server, image: np.ndarray) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        outside = model_management_pb2.ReloadConfigRequest()
        for base_path in ("/etc", "/proc/self"):
            model = outside.config.model_config_list.config.add()
            model.name, model.base_path, model.model_platform = "mnist", base_path, "tensorflow"
            try:
                stub.HandleReloadConfigRequest(outside, timeout=10)
                raise AttackFailed(f"a reload to {base_path} was accepted")
            except grpc.RpcError as err:
                expect(err.code() == grpc.StatusCode.PERMISSION_DENIED, str(err.code()))
            del outside.config.model_config_list.config[:]
        empty = model_management_pb2.ReloadConfigRequest()
        empty.config.model_config_list.SetInParent()
        stub.HandleReloadConfigRequest(empty, timeout=60)
    gone = time.monotonic()
    while not server.serves_mnist(image):  # the watched config file wins again at its next poll
        expect(time.monotonic() - gone < 60, "mnist did not come back after an empty reload")
        time.sleep(0.5)
    return (
        f"reloads to /etc and /proc: PERMISSION_DENIED; an empty one unloaded mnist for "
        f"{time.monotonic() - gone:.0f} s, until the config file's next poll"
    )


def deep_json(server: Server, image: np.ndarray) -> str:
    codes, messages = set(), set()
    for depth in (65, 300, 1022, 5000):
        for key in ("instances", "inputs"):
            body = f'{{"{key}": ' + "[" * depth + "0.5" + "]" * depth + "}"
            reply = rest_post(server, "/v1/models/mnist:predict", body.encode())
            codes.add(reply.status_code)
            messages.add(bool(reply.json().get("error")))
    expect(codes == {400} and messages == {True}, f"deep JSON got {codes}, messages {messages}")
    return "JSON nested 65 to 5000 deep, rows and columns: 400 with a message"


def odd_tensors(server: Server, image: np.ndarray) -> str:
    found = []
    odd = ((types_pb2.DT_FLOAT, 100), (types_pb2.DT_VARIANT, 1), (types_pb2.DT_RESOURCE, 1))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for dtype, rank in odd:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "mnist"
            tensor = request.inputs["images"]
            tensor.dtype = dtype
            for _ in range(rank):
                tensor.tensor_shape.dim.add().size = 1
            try:
                channel.unary_unary(PREDICT)(request.SerializeToString(), timeout=10)
                found.append("OK")
            except grpc.RpcError as err:
                found.append(err.code().name)
    expect(set(found) == {"INVALID_ARGUMENT"}, f"odd tensors got {found}")
    return "a rank-100 tensor, DT_VARIANT, DT_RESOURCE: INVALID_ARGUMENT"


def huge_headers(server: Server, image: np.ndarray) -> str:
    answers = []
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as connection:
            connection.sendall(b"GET /v1/models/mnist HTTP/1.1\r\nX-Big: ")
            try:
                for _ in range(20 * 16):  # up to 20 MB, 64 KiB at a time, until the server closes
                    connection.sendall(b"a" * (64 << 10))
            except OSError:
                pass
            try:
                answers.append(connection.recv(64)[:12])
            except OSError:
                answers.append(b"reset")
    expect(all(a in (b"HTTP/1.1 431", b"reset", b"") for a in answers), f"huge headers got {answers}")
    return "10 connections sending 20 MB headers: 431 and closed"


def _read_until_closed(connection: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := connection.recv(1 << 16):
            answer += chunk
    except OSError:  # reset: the server closed with bytes of ours unread
        pass
    return answer


def endless_trailers(server: Server, image: np.ndarray) -> str:
    answers = []
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as connection:
            connection.sendall(
                b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"2\r\n{}\r\n0\r\n"
            )
            try:
                for index in range(200):  # up to 10 MB of trailers, until the server closes
                    connection.sendall(
                        b"".join(
                            b"t%d: %s\r\n" % (i, b"x" * 40) for i in range(1000 * index, 1000 * index + 1000)
                        )
                    )
            except OSError:
                pass
            answers.append(_read_until_closed(connection)[:12])
    expect(all(a == b"HTTP/1.1 431" for a in answers), f"endless trailers got {answers}")
    return "4 chunked bodies followed by 10 MB of trailers: 431 and closed"


def pipelined_flood(server: Server, image: np.ndarray) -> str:
    answered = []
    request = b"GET /v1/models/mnist HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as connection:
            try:
                for _ in range(50):  # up to 100,000 requests, never reading an answer
                    connection.sendall(request * 2000)
            except OSError:
                pass
            answered.append(_read_until_closed(connection).count(b"HTTP/1.1 200"))
    expect(max(answered) < 1000, f"pipelined requests answered per connection: {answered}")
    return f"4 connections pipelining 100,000 requests unread: closed after {max(answered)} answers at most"


def unread_bodies(server: Server, image: np.ndarray) -> str:
    started = time.monotonic()
    connections = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) for _ in range(50)]
    try:
        for connection in connections:  # answered 400 at once, its stated body never sent
            connection.sendall(
                b"POST /v1/models/mnist HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{"
            )
        answers = [_read_until_closed(connection) for connection in connections]
    finally:
        for connection in connections:
            connection.close()
    closing = sum(a.startswith(b"HTTP/1.1 400") and b"connection: close" in a for a in answers)
    expect(
        closing == len(connections), f"{closing} of {len(connections)} unread bodies closed their connection"
    )
    return f"50 requests answered with their bodies unread: all closed in {time.monotonic() - started:.1f} s"


ATTACKS: list[Callable[[Server, np.ndarray], str]] = [
    large_json,
    stalled_bodies,
    empty_batches,
    unknown_names,
    huge_grpc,
    reload_calls,
    deep_json,
    odd_tensors,
    huge_headers,
    endless_trailers,
    pipelined_flood,
    unread_bodies,
    rapid_reset,
    empty_calls,
    stalled_calls,
    compression_bomb,
    frame_floods,
]
