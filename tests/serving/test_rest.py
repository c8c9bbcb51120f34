"""The REST API request by request, as TF Serving documents it (g3doc/api_rest.md)."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from client import ServingClient
from contract.signature import scale_pixels
from tests.conftest import ServerProcess, start_server, wait_for
from trainer.data import Split
from trainer.export import WARMUP_BATCH_SIZES


def post(server: ServerProcess, path: str, body: object) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{server.rest_url}{path}", data=data, timeout=30)


def test_model_status(server: ServerProcess) -> None:
    reply = requests.get(f"{server.rest_url}/v1/models/mnist", timeout=5)
    assert reply.status_code == 200
    assert reply.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert requests.get(f"{server.rest_url}/v1/models/mnist/versions/1", timeout=5).status_code == 200


def test_metadata_carries_the_signature(server: ServerProcess) -> None:
    reply = requests.get(f"{server.rest_url}/v1/models/mnist/metadata", timeout=5).json()
    assert reply["model_spec"] == {"name": "mnist", "version": "1", "signature_name": ""}
    signature = reply["metadata"]["signature_def"]["signature_def"]["serving_default"]
    images = signature["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert signature["outputs"]["classes"]["dtype"] == "DT_INT64"
    assert signature["method_name"] == "tensorflow/serving/predict"


def test_row_predict_matches_the_savedmodel(
    server: ServerProcess, images: np.ndarray, in_process: dict[str, np.ndarray]
) -> None:
    reply = post(server, "/v1/models/mnist:predict", {"instances": images.tolist()})
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert len(predictions) == len(images)
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions], in_process["probabilities"], rtol=1e-6
    )
    assert [p["classes"] for p in predictions] == in_process["classes"].tolist()


def test_columnar_predict_and_named_rows(
    server: ServerProcess, images: np.ndarray, in_process: dict[str, np.ndarray]
) -> None:
    columnar = post(
        server, "/v1/models/mnist/versions/1:predict", {"inputs": {"images": images[:2].tolist()}}
    )
    assert columnar.status_code == 200, columnar.text
    outputs = columnar.json()["outputs"]
    # Two images run as a batch of their own, the reference as eight: TensorFlow's kernels may sum in
    # another order for another batch size (2e-6 apart on one AMD EPYC), so not to float32's last bits.
    np.testing.assert_allclose(outputs["probabilities"], in_process["probabilities"][:2], rtol=1e-5)
    assert outputs["classes"] == in_process["classes"][:2].tolist()
    named = post(
        server,
        "/v1/models/mnist:predict",
        {"signature_name": "serving_default", "instances": [{"images": images[0].tolist()}]},
    )
    assert named.json()["predictions"][0]["classes"] == in_process["classes"][0]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/mnist:predict", b'{"instances": [1', 400, "JSON Parse error"),
        ("/v1/models/mnist:predict", b"", 400, "JSON Parse error: The document is empty"),
        ("/v1/models/mnist:predict", {"images": []}, 400, "Missing 'inputs' or 'instances' key"),
        ("/v1/models/mnist:predict", {"instances": []}, 400, "No values in 'instances' array"),
        ("/v1/models/mnist:predict", {"inputs": {"pixels": [[0.0]]}}, 400, "Missing named input: images"),
        ("/v1/models/mnist:predict", {"instances": [[[0.0] * 28] * 27]}, 400, "shape [1, 27, 28]"),
        ("/v1/models/mnist:predict", {"instances": [[["x"] * 28] * 28]}, 400, "holds strings"),
        (
            "/v1/models/mnist:predict",
            {"instances": [[[0.0], [1.0, 2.0]]]},
            400,
            "Encountered list at unexpected",
        ),
        (
            "/v1/models/mnist:predict",
            {"signature_name": "nope", "instances": [0]},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        ("/v1/models/nope:predict", {"instances": [0]}, 404, "Servable not found for request: Latest(nope)"),
        (
            "/v1/models/mnist/versions/7:predict",
            {"instances": [0]},
            404,
            "Servable not found for request: Specific(mnist, 7)",
        ),
        (
            "/v1/models/mnist/labels/stable:predict",
            {"instances": [0]},
            400,
            "Unrecognized servable version label: stable",
        ),
        ("/v1/models/mnist:guess", {"instances": [0]}, 400, "Malformed request: POST /v1/models/mnist:guess"),
        (
            "/v1/models/mnist:predict",
            '{"signature_name": "\\ud800", "instances": [0]}',
            400,
            "JSON Parse error: The surrogate pair in string is invalid. at offset: 20",
        ),
        (
            "/v1/models/mnist:classify",
            '{"examples": [{"x": ["\\udc00"]}]}',
            400,
            "JSON Parse error: The surrogate pair in string is invalid. at offset: 22",
        ),
    ],
)
def test_bad_requests_get_tf_serving_codes_and_a_named_problem(
    server: ServerProcess, path: str, body: object, status: int, message: str
) -> None:
    reply = post(server, path, body)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("TRACE", "/v1/models/mnist", 501),
        ("GET", "/v1/models/mn%zzist", 400),
        ("GET", "/v1/models/mnist?a=[1]", 400),
    ],
)
def test_what_tf_servings_http_server_refuses_is_refused_with_its_page(
    server: ServerProcess, method: str, target: str, status: int
) -> None:
    """A method libevent does not allow (501) and a target outside its strict URI grammar (400) are
    answered with libevent's page, over a real connection that is then closed."""
    with contextlib.closing(
        http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    ) as connection:
        connection.request(method, target)
        reply = connection.getresponse()
        assert reply.status == status and reply.getheader("Content-Type") == "text/html"
        assert f"<TITLE>{status} ".encode() in reply.read() and reply.will_close


def test_nan_pixels_are_refused(server: ServerProcess, images: np.ndarray) -> None:
    """TF Serving's parser reads NaN as a number, and runs the model on it; ours refuses it as an input
    (docs/tf-serving-compat.md, section 10), but not under a key that is no input."""
    body = json.dumps({"instances": images[:1].tolist()}).replace("[0.0]", "[NaN]", 1)
    reply = post(server, "/v1/models/mnist:predict", body)
    assert reply.status_code == 400 and reply.json()["error"] == "input 'images' holds NaN or infinite values"
    aside = json.dumps({"instances": images[:1].tolist(), "note": float("nan")})
    assert post(server, "/v1/models/mnist:predict", aside).status_code == 200


def test_unknown_model_and_version_status(server: ServerProcess) -> None:
    missing = requests.get(f"{server.rest_url}/v1/models/nope", timeout=5)
    assert missing.status_code == 404 and missing.json() == {
        "error": "Could not find any versions of model nope"
    }
    version = requests.get(f"{server.rest_url}/v1/models/mnist/versions/9", timeout=5)
    assert version.status_code == 404 and "Could not find version 9 of model mnist" in version.json()["error"]


def test_a_batch_larger_than_16_mib_of_json_is_answered(server: ServerProcess, images: np.ndarray) -> None:
    """As TF Serving, a large batch is taken whole (bounded by the byte budget, not by a small body
    limit), in one body of about 17 MiB."""
    instances = np.tile(images, (700, 1, 1, 1))
    body = json.dumps({"instances": instances.tolist()}).encode()
    assert len(body) > 16 * 1024 * 1024
    reply = post(server, "/v1/models/mnist:predict", body)
    assert reply.status_code == 200, reply.text[:200]
    predictions = np.array([p["probabilities"] for p in reply.json()["predictions"]])
    assert predictions.shape == (len(instances), 10)
    digits = predictions.argmax(axis=1).reshape(700, 8)
    assert (digits == digits[0]).all()  # each copy of the eight images got the same answers


def test_a_chunked_body_is_read_whole(server: ServerProcess, images: np.ndarray) -> None:
    """Transfer-Encoding: chunked (what a client streaming its body sends) is answered like a body with
    a Content-Length."""
    body = json.dumps({"instances": images[:2].tolist()}).encode()
    chunks = (body[i : i + 1000] for i in range(0, len(body), 1000))  # a generator: requests chunks it
    reply = requests.post(f"{server.rest_url}/v1/models/mnist:predict", data=chunks, timeout=30)
    whole = post(server, "/v1/models/mnist:predict", body)
    assert reply.status_code == 200 and reply.json() == whole.json()


def test_prometheus_metrics_count_as_tf_serving_counts(server: ServerProcess, images: np.ndarray) -> None:
    """TF Serving's request metrics, request by request: every REST /v1/ call is counted (status and
    metadata too, with the API label ""), gRPC counts Predict but not status or metadata, only
    successful calls are timed, and the model call's runtime is `TF1` under the gRPC API name."""
    before = prometheus_samples(server)
    post(server, "/v1/models/mnist:predict", {"instances": images[:1].tolist()})
    post(server, "/v1/models/nope:predict", {"instances": [0]})
    assert requests.get(f"{server.rest_url}/v1/models/mnist", timeout=5).status_code == 200
    assert requests.get(f"{server.rest_url}/v1/models/mnist/metadata", timeout=5).status_code == 200
    grpc_client = ServingClient.grpc(server.grpc_target)
    grpc_client.predict(images[:1])
    grpc_client.status()
    grpc_client.metadata()
    after = prometheus_samples(server)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew(":tensorflow:serving:request_count", model_name="mnist", status="OK") == 4
    assert grew(":tensorflow:serving:request_count", model_name="", status="NOT_FOUND") == 1  # not served
    latency = ":tensorflow:serving:request_latency_count"
    assert grew(latency, model_name="mnist", API="predict", entrypoint="REST") == 1
    assert grew(latency, model_name="mnist", API="", entrypoint="REST") == 2
    assert grew(latency, model_name="mnist", API="Predict", entrypoint="GRPC") == 1
    assert grew(latency, model_name="", API="predict", entrypoint="REST") == 0  # failed: not timed
    assert (
        grew(":tensorflow:serving:runtime_latency_count", model_name="mnist", API="Predict", runtime="TF1")
        == 2
    )
    assert (
        grew(":tensorflow:serving:request_latency_sum", model_name="mnist", API="predict", entrypoint="REST")
        > 0
    )
    loads = {labels: value for (name, labels), value in after.items() if name.endswith("load_attempt_count")}
    assert [dict(labels)["status"] for labels in loads] == ["success"] and list(loads.values()) == [1.0]
    warm_ups = {
        labels: value for (name, labels), value in after.items() if name.endswith("model_warmup_records_read")
    }
    (labels, records), *others = warm_ups.items()  # the trainer's warm-up file, read as the version loaded
    assert not others and dict(labels)["status"] == "OK" and records == len(WARMUP_BATCH_SIZES)
    assert after[":tensorflow:serving:model_warmup_latency_count", labels] == 1


def test_names_of_models_not_served_share_one_label_however_many_there_are(server: ServerProcess) -> None:
    """A client asking for endless made-up model names (long ones too) cannot grow the metrics page:
    they all count under the model name "", so its size does not move."""
    page = f"{server.rest_url}/monitoring/prometheus/metrics"
    post(server, "/v1/models/warm-up-name:predict", {"instances": [0]})
    before = len(requests.get(page, timeout=5).content)
    for i in range(300):
        post(server, f"/v1/models/{'x' * 1000}{i}:predict", {"instances": [0]})
        requests.get(f"{server.rest_url}/v1/models/unknown-{i}", timeout=5)
    after = requests.get(page, timeout=5)
    assert len(after.content) - before < 100  # a few digits more in the counts
    names = {
        s.labels.get("model_name") for f in text_string_to_metric_families(after.text) for s in f.samples
    }
    assert names <= {"mnist", "", None}


def prometheus_samples(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the server's metrics, parsed as Prometheus does."""
    text = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_rest_classify_takes_examples_as_json(
    server: ServerProcess, images: np.ndarray, in_process: dict[str, np.ndarray]
) -> None:
    examples = [{"image": image.ravel().tolist()} for image in images[:2]]
    reply = post(server, "/v1/models/mnist:classify", {"signature_name": "classify", "examples": examples})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [[label for label, _ in row] for row in results] == [[str(d) for d in range(10)]] * 2
    np.testing.assert_allclose(
        [[s for _, s in row] for row in results], in_process["probabilities"][:2], rtol=1e-5
    )
    missing = post(server, "/v1/models/mnist:classify", {"signature_name": "classify"})
    assert missing.status_code == 400 and "'examples' is expected" in missing.json()["error"]


def test_deeply_nested_json_is_a_bad_request(server: ServerProcess) -> None:
    reply = post(server, "/v1/models/mnist:predict", '{"instances": ' + "[" * 100000 + "]" * 100000 + "}")
    assert reply.status_code == 400 and "nested too deeply" in reply.json()["error"]


def test_an_unread_body_does_not_poison_the_connection(server: ServerProcess, images: np.ndarray) -> None:
    with requests.Session() as session:
        refused = session.post(
            f"{server.rest_url}/v1/models/mnist:PREDICT", data=b'{"instances": [0]}', timeout=10
        )
        assert refused.status_code == 400 and "Malformed request" in refused.json()["error"]
        again = session.post(
            f"{server.rest_url}/v1/models/mnist:predict", json={"instances": images[:1].tolist()}, timeout=10
        )
        assert again.status_code == 200


def test_bad_base64_is_a_bad_request(server: ServerProcess) -> None:
    body = {"signature_name": "classify", "examples": [{"image": {"b64": "é"}}]}
    reply = post(server, "/v1/models/mnist:classify", body)
    assert (reply.status_code, reply.json()) == (400, {"error": "Unable to base64 decode"})  # json_tensor:386


def peak_memory_bytes(pid: int) -> int:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["VmHWM"].split()[0]) * 1024


def test_many_large_bodies_at_once_are_answered_within_bounded_memory(
    trained_model_dir: Path, images: np.ndarray
) -> None:
    """Sixteen 15 MiB bodies at once would take gigabytes parsed together; the server reads, parses and
    answers at most a few at a time, and every client gets an answer (here 400: wrong shape; 429 for
    those that find the budget held by the others, whose large requests leave an eighth of it free)."""
    server = start_server("--model_name=mnist", f"--model_base_path={trained_model_dir / 'mnist'}")
    try:
        body = b'{"instances": [' + b"0.5," * (15 * 1024 * 1024 // 4 - 8) + b"0.5]}"
        before = peak_memory_bytes(server.process.pid)
        with ThreadPoolExecutor(16) as pool:
            codes = list(
                pool.map(lambda _: post(server, "/v1/models/mnist:predict", body).status_code, range(16))
            )
        assert set(codes) <= {400, 429, 503} and codes.count(400) >= 4, codes
        assert peak_memory_bytes(server.process.pid) - before < 1.5 * 1024**3
        assert post(server, "/v1/models/mnist:predict", {"instances": images[:1].tolist()}).status_code == 200
    finally:
        assert server.stop() == 0


def test_a_large_body_is_parsed_apart_and_other_requests_are_answered_meanwhile(
    trained_model_dir: Path, images: np.ndarray, in_process: dict[str, np.ndarray]
) -> None:
    """A 40 MB predict body took 4 s of the event loop and twenty times its size in memory to parse, and
    every other request (gRPC's too) waited. Now it is parsed in another process: single-image gRPC
    predictions go on answering meanwhile, and the server's own memory grows by a few bodies at most."""
    server = start_server("--model_name=mnist", f"--model_base_path={trained_model_dir / 'mnist'}")
    try:
        rows = np.random.default_rng(3).random((5000, 28, 28, 1)).round(7).tolist()
        body = json.dumps({"instances": rows, "signature_name": "nope"}).encode()
        assert len(body) > 40 * 1024 * 1024
        client = ServingClient.grpc(server.grpc_target, retries=0, timeout=30)
        client.predict(images[:1])
        slowest, done = 0.0, threading.Event()

        def predict_meanwhile() -> None:
            nonlocal slowest
            while not done.is_set():
                started = time.perf_counter()
                client.predict(images[:1])
                slowest = max(slowest, time.perf_counter() - started)

        before = peak_memory_bytes(server.process.pid)
        with ThreadPoolExecutor(1) as pool:
            meanwhile = pool.submit(predict_meanwhile)
            reply = post(server, "/v1/models/mnist:predict", body)
            done.set()
            meanwhile.result()
        assert reply.status_code == 400 and '"nope" not found' in reply.json()["error"]
        assert slowest < 1.0, f"a gRPC predict waited {slowest:.2f} s"
        # The body as read, joined and handed over (20 times it as Python objects before).
        assert peak_memory_bytes(server.process.pid) - before < 5 * len(body)
        # A large body that is read through answers as a small one does.
        batch = np.repeat(images, 50, axis=0)  # 400 images, 2.5 MB of JSON
        reply = post(server, "/v1/models/mnist:predict", {"instances": batch.tolist()})
        probabilities = np.array([p["probabilities"] for p in reply.json()["predictions"]])
        np.testing.assert_allclose(
            probabilities, np.repeat(in_process["probabilities"], 50, axis=0), atol=1e-6
        )
        missing = post(server, "/v1/models/other:predict", body[:-1])  # the body's error comes first
        assert missing.status_code == 400 and "JSON Parse error" in missing.json()["error"]
        assert post(server, "/v1/models/other:predict", body).status_code == 404
    finally:
        assert server.stop() == 0


def test_a_crowd_of_new_connections_is_answered(server: ServerProcess, images: np.ndarray) -> None:
    """A batch job opening its whole pool at once, while the server is busy answering: every
    connection is accepted and answered, none reset (the standard library's listen backlog of 5 let
    the kernel drop some)."""
    crowd = 256
    body = json.dumps({"instances": images[:1].tolist()})
    gate = threading.Barrier(crowd)

    def predict(_: int) -> int:
        with requests.Session() as session:
            gate.wait(timeout=30)
            return session.post(
                f"{server.rest_url}/v1/models/mnist:predict", data=body, timeout=60
            ).status_code

    with ThreadPoolExecutor(crowd) as pool:
        codes = list(pool.map(predict, range(crowd)))
    assert codes == [200] * crowd


def test_clients_that_drop_their_connections_leave_no_traceback(
    trained_model_dir: Path, images: np.ndarray
) -> None:
    """64 clients reset their connections mid-request (SO_LINGER 0: a RST, as a killed client sends),
    some inside the request line, some inside the body: the log stays quiet and the server serves on."""
    server = start_server("--model_name=mnist", f"--model_base_path={trained_model_dir / 'mnist'}")
    body = json.dumps({"instances": images[:1].tolist()}).encode()
    request = (
        f"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )

    def drop(index: int) -> None:
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as connection:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.sendall(request[: 10 + index * len(request) // 80])  # a different cut for each

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(drop, range(64)))
        assert post(server, "/v1/models/mnist:predict", {"instances": images[:1].tolist()}).status_code == 200
    finally:
        assert server.stop() == 0
    stderr = server.process.stderr.read() if server.process.stderr else ""
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr[-2000:]


def test_a_body_that_never_comes_holds_nothing_and_its_connection_is_closed(
    trained_model_dir: Path, images: np.ndarray
) -> None:
    """A client stating a 224 MiB body (the largest a request may hold of the default 256 MiB budget)
    and sending one byte of it: other predictions are answered meanwhile (it holds that byte of the
    budget, not 224 MiB), and after --rest_api_timeout_in_ms it gets 408 and its connection is
    closed."""
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        "--rest_api_timeout_in_ms=1500",
    )
    try:
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as stalled:
            stalled.sendall(
                b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 234881024\r\n\r\n{"
            )
            for _ in range(3):
                assert (
                    post(server, "/v1/models/mnist:predict", {"instances": images[:1].tolist()}).status_code
                    == 200
                )
            answer = read_until_closed(stalled)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1.5 s" in answer
    finally:
        assert server.stop() == 0


def read_until_closed(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def test_a_whole_request_in_one_read_is_not_taken_for_long_headers(
    trained_model_dir: Path, mnist_test: Split
) -> None:
    """A keep-alive client whose request, headers and body, is larger than --rest_api_max_header_bytes
    and reaches the server in one read (one send of under 64 KiB on loopback; under load, any size)
    is answered, not refused with 431: only bytes before a request's headers end count against them."""
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        "--rest_api_max_header_bytes=4096",
    )
    body = json.dumps({"instances": scale_pixels(mnist_test.images[:4]).tolist()}).encode()
    assert 4096 < len(body) < 60_000
    request = (
        b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    try:
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as connection:
            reader = connection.makefile("rb")
            for _ in range(5):
                connection.sendall(request)
                status = reader.readline()
                assert status.startswith(b"HTTP/1.1 200"), status
                length = 0
                while (line := reader.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                assert b"predictions" in reader.read(length)
    finally:
        assert server.stop() == 0


def test_connections_whose_headers_never_finish_are_closed(trained_model_dir: Path) -> None:
    """Headers must come whole within --rest_api_timeout_in_ms (a client trickling them, or sending
    nothing at all, is closed) and within --rest_api_max_header_bytes (past it, 431): httptools holds
    an unfinished header in memory, 20 MB of it for a client that sends that much."""
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        "--rest_api_timeout_in_ms=1500",
        "--rest_api_max_header_bytes=16384",
    )
    try:
        with (
            socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as silent,
            socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as trickling,
            socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as oversized,
            socket.create_connection(("127.0.0.1", server.rest_port), timeout=30) as whole,
        ):
            trickling.sendall(b"GET /v1/models/mnist HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            oversized.sendall(b"GET /v1/models/mnist HTTP/1.1\r\nX-Big: " + b"a" * 20_000)
            # Over the limit but ended in the same read: measured when they end, refused all the same.
            whole.sendall(b"GET /v1/models/mnist HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
            assert read_until_closed(whole).startswith(b"HTTP/1.1 431")
            started = time.monotonic()
            for _ in range(3):  # a trickle that keeps the connection busy, a byte at a time
                trickling.sendall(b"a")
                assert requests.get(f"{server.rest_url}/v1/models/mnist", timeout=10).status_code == 200
            assert read_until_closed(silent) == b""
            assert read_until_closed(trickling) == b""
            assert time.monotonic() - started < 10
            assert read_until_closed(oversized).startswith(b"HTTP/1.1 431")
        with requests.Session() as session:  # a keep-alive client with headers in bounds is unaffected
            for _ in range(3):
                reply = session.get(f"{server.rest_url}/v1/models/mnist", headers={"X-Ok": "a" * 8000})
                assert reply.status_code == 200
    finally:
        assert server.stop() == 0


def send_until_refused(connection: socket.socket, data: bytes) -> None:
    """Send what the server will take: it may close the connection part way, as it should."""
    with contextlib.suppress(OSError):
        connection.sendall(data)


def test_connections_cannot_make_the_server_hold_more_than_their_limits(trained_model_dir: Path) -> None:
    """What a hostile client could otherwise grow without bound, each held to a flag:
    - trailers after a chunked body (uvicorn would keep each one): --rest_api_max_header_bytes, 431;
    - pipelined requests (uvicorn would queue all a read brings, and read again after every answer):
      --rest_api_max_pipelined_requests, then the rest is not read and the connection is closed;
    - a body trickled after its request was answered (each byte would restart the idle timer): the
      answer says connection: close and the connection closes;
    - connections: --rest_api_max_connections, one more answered 503 and closed.
    A refusal never overtakes an answer owed to an earlier request, nor leaves a traceback."""
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        "--rest_api_max_header_bytes=16384",
        "--rest_api_max_pipelined_requests=8",
        "--rest_api_max_connections=6",
    )
    address = ("127.0.0.1", server.rest_port)
    try:
        with socket.create_connection(address, timeout=30) as trailing:
            trailing.sendall(
                b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"2\r\n{}\r\n0\r\n"
            )
            send_until_refused(trailing, b"".join(b"t%d: x\r\n" % i for i in range(20_000)))
            assert read_until_closed(trailing).startswith(b"HTTP/1.1 431")

        with socket.create_connection(address, timeout=30) as behind:  # refused behind an answer owed
            behind.sendall(
                b"GET /v1/models/mnist HTTP/1.1\r\nHost: x\r\n\r\n"
                + b"GET /v1/models/mnist HTTP/1.1\r\nX-Big: "
                + b"a" * 20_000
                + b"\r\n\r\n"
            )
            answers = read_until_closed(behind)
            assert answers.startswith(b"HTTP/1.1 200") and answers.count(b"HTTP/1.1 ") == 1
            assert b"connection: close" in answers

        with socket.create_connection(address, timeout=30) as pipelining:
            send_until_refused(pipelining, b"GET /v1/models/mnist HTTP/1.1\r\nHost: x\r\n\r\n" * 500)
            answers = read_until_closed(pipelining)
            answered = answers.count(b"HTTP/1.1 200")
            assert 1 + 8 <= answered < 500 and answers.count(b"HTTP/1.1") == answered
            assert answers.rsplit(b"HTTP/1.1 200", 1)[1].count(b"connection: close") == 1

        with socket.create_connection(address, timeout=30) as trickling:
            started = time.monotonic()
            trickling.sendall(b"POST /v1/models/mnist HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            answer = read_until_closed(trickling)  # closed by the server, not after the 30 s idle timeout
            assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" in answer
            assert time.monotonic() - started < 10

        idle = [socket.create_connection(address, timeout=30) for _ in range(6)]
        try:
            with socket.create_connection(address, timeout=30) as one_more:
                assert read_until_closed(one_more).startswith(b"HTTP/1.1 503")
        finally:
            for connection in idle:
                connection.close()
        wait_for(
            lambda: requests.get(f"{server.rest_url}/v1/models/mnist", timeout=10).status_code == 200,
            10,
            "a connection once the idle ones are gone",
        )
    finally:
        assert server.stop() == 0
    assert server.process.stderr is not None
    stderr = server.process.stderr.read()
    assert "Traceback" not in stderr, stderr[-3000:]


def test_a_gzip_body_is_inflated_as_tf_serving_inflates_it_within_the_byte_budget(
    server: ServerProcess, images: np.ndarray
) -> None:
    """TF Serving inflates a body sent with Content-Encoding: gzip; ours too, and a body that would
    inflate past the byte budget is refused (a few hundred KB of gzip could otherwise hold GBs)."""
    body = json.dumps({"instances": images[:2].tolist()}).encode()
    plain = post(server, "/v1/models/mnist:predict", body).json()
    squeezed = requests.post(
        f"{server.rest_url}/v1/models/mnist:predict",
        data=gzip.compress(body),
        headers={"Content-Encoding": "gzip"},
        timeout=30,
    )
    assert squeezed.status_code == 200 and squeezed.json() == plain
    bomb = gzip.compress(b'{"instances": [' + b" " * (300 << 20) + b"]}")  # 300 MB of blanks
    refused = requests.post(
        f"{server.rest_url}/v1/models/mnist:predict",
        data=bomb,
        headers={"Content-Encoding": "gzip"},
        timeout=30,
    )
    assert refused.status_code == 400 and "more than the server's limit" in refused.json()["error"]
    broken = requests.post(
        f"{server.rest_url}/v1/models/mnist:predict",
        data=gzip.compress(body)[:-20],
        headers={"Content-Encoding": "gzip"},
        timeout=30,
    )
    assert broken.status_code == 400 and "not whole gzip data" in broken.json()["error"]
    assert post(server, "/v1/models/mnist:predict", body).json() == plain
