"""One typed client for a TF Serving API, over gRPC (the default) or REST, for ours and the real one.

    client = ServingClient.grpc("localhost:8500")        # or ServingClient.rest("http://localhost:8501")
    for answer in client.predict(images):                 # float32 [n, 28, 28, 1] or [28, 28, 1]
        print(answer.digit, answer.version)

Transient failures (UNAVAILABLE, connection refused, HTTP 503; RESOURCE_EXHAUSTED, HTTP 429, a server
whose request budget is full for now) are retried with exponential backoff;
anything else raises ServingClientError carrying the server's status and message. Channels are opened
once per target and shared.
"""

from __future__ import annotations

import functools
import http.client
import json
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import numpy as np
import requests
import urllib3
from google.protobuf.message import Message

from client.addresses import grpc_target_problem, rest_url_problem
from contract.signature import DIGITS, IMAGE_SHAPE, INPUT, PROBABILITIES
from tfs_api.tensorflow.core.framework import tensor_pb2, types_pb2
from tfs_api.tensorflow.core.protobuf import error_codes_pb2
from tfs_api.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

DEFAULT_GRPC = "localhost:8500"
# Failures worth another try after a pause: the server is down or restarting, or holds too many
# requests' bytes for now (a request too large for it ever is RESOURCE_EXHAUSTED too, and fails again).
TRANSIENT = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})
DEFAULT_REST = "http://localhost:8501"
# The most a REST answer may be: 1,000 images' probabilities are about 150 KB. A server that sends
# more (or without end) is no TF Serving, and its answer is not read into memory whole.
MAX_ANSWER_BYTES = 64 << 20
T = TypeVar("T")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """A server's words with their control characters escaped: one line, no escape sequence."""
    return _CONTROL.sub(lambda found: repr(found[0])[1:-1], text)


class ServingClientError(Exception):
    """The server's answer to a failed call (or why there was none): a status name and its message,
    control characters escaped (a server's message reaches a terminal: no escape sequence, one line)."""

    def __init__(self, status: str, message: str) -> None:
        message = printable(message)
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


@dataclass(frozen=True)
class Prediction:
    digit: int
    probabilities: tuple[float, ...]
    version: int


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: str
    error_message: str


def as_batch(images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """float32 [n, 28, 28, 1] from one image or many, grey [28, 28] or [28, 28, 1], ink in [0, 1] as
    the normaliser gives it: 8-bit pixels (0-255) or NaNs would be answered with nonsense, or refused
    by the server after a round trip."""
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 2 or (batch.ndim == 3 and batch.shape[-1] == 1 and batch.shape[0] == IMAGE_SHAPE[0]):
        batch = batch[None]
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.shape[1:] != IMAGE_SHAPE:
        side = "x".join(map(str, IMAGE_SHAPE[:2]))
        raise ValueError(f"images of shape {batch.shape[1:]}, expected {side} (normalise them first)")
    if not np.isfinite(batch).all():
        raise ValueError("the images hold NaN or infinite values (normalise them first)")
    if batch.size and not (float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0):
        raise ValueError(
            f"pixel values from {batch.min():g} to {batch.max():g}, expected ink in [0, 1] "
            "(8-bit pixels: divide by 255; or normalise the image first)"
        )
    return batch


class ServingClient:
    """Predict, status and metadata over one transport; see `grpc()` and `rest()`."""

    def __init__(
        self, transport: Transport, timeout: float = 10.0, retries: int = 3, backoff: float = 0.2
    ) -> None:
        self.transport, self.timeout, self.retries, self.backoff = transport, timeout, retries, backoff

    @classmethod
    def grpc(cls, target: str = DEFAULT_GRPC, **options: Any) -> ServingClient:
        """A client of the gRPC API at `target`, HOST:PORT (ValueError otherwise: gRPC would take a
        bare host as port 443, and fail only after its retries)."""
        problem = grpc_target_problem(target) if isinstance(target, str) else "takes a str"
        if problem:
            raise ValueError(f"ServingClient.grpc {problem}")
        return cls(GrpcTransport(target), **options)

    @classmethod
    def rest(cls, url: str = DEFAULT_REST, **options: Any) -> ServingClient:
        """A client of the REST API at `url`, http(s)://HOST[:PORT] (ValueError otherwise)."""
        problem = rest_url_problem(url) if isinstance(url, str) else "takes a str"
        if problem:
            raise ValueError(f"ServingClient.rest {problem}")
        return cls(RestTransport(url), **options)

    def _with_retries(self, call: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except ServingClientError as err:
                if err.status not in TRANSIENT or attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def predict(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        model: str = "mnist",
        version: int | None = None,
        label: str | None = None,
    ) -> list[Prediction]:
        """One Prediction per image, from the version the spec names (default: the latest)."""
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if len(images) == 0:
            return []
        batch = as_batch(images)
        probabilities, answered = self._with_retries(
            lambda: self.transport.predict(batch, model, version, label, self.timeout)
        )
        _check_answer(probabilities, len(batch))
        return [
            Prediction(int(np.argmax(row)), tuple(float(p) for p in row), answered) for row in probabilities
        ]

    def status(self, model: str = "mnist", version: int | None = None) -> list[VersionStatus]:
        return self._with_retries(lambda: self.transport.status(model, version, self.timeout))

    def metadata(self, model: str = "mnist", version: int | None = None, label: str | None = None) -> dict:
        """The model's signatures, as TF Serving's REST API prints them."""
        return self._with_retries(lambda: self.transport.metadata(model, version, label, self.timeout))


def _check_answer(probabilities: np.ndarray, images: int) -> None:
    """Probabilities a server answered for `images` images, refused unless they are one row of one
    per digit for each image, all finite: anything else is a server that is not serving this
    platform's model (or not well), and no digit can be read from it."""
    wanted = (images, len(DIGITS))
    if probabilities.shape != wanted:
        raise ServingClientError(
            "UNKNOWN",
            f"the server answered probabilities of shape {list(probabilities.shape)} for "
            f"{images} image(s), expected {list(wanted)}: is it serving an MNIST model?",
        )
    if not np.isfinite(probabilities).all():
        raise ServingClientError("UNKNOWN", "the server answered NaN or infinite probabilities")


class Transport:
    """How a call reaches the server; answers (probabilities [n, 10], version that answered)."""

    def predict(
        self, images: np.ndarray, model: str, version: int | None, label: str | None, timeout: float
    ) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def status(self, model: str, version: int | None, timeout: float) -> list[VersionStatus]:
        raise NotImplementedError

    def metadata(self, model: str, version: int | None, label: str | None, timeout: float) -> dict:
        raise NotImplementedError


class RestTransport(Transport):
    """TF Serving's REST API with `requests`; no TensorFlow needed on this side."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._local = threading.local()  # a requests.Session is not thread-safe: one per thread

    @property
    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _path(self, model: str, version: int | None, label: str | None) -> str:
        """A model's path, its name and label escaped: `../x` or `a/b?c` name a model or label, not
        another path (TF Serving decodes the escapes in names)."""
        path = f"{self.url}/v1/models/{quote(model, safe='')}"
        if version is not None:
            return f"{path}/versions/{version}"
        return f"{path}/labels/{quote(label, safe='')}" if label is not None else path

    def _call(self, method: str, url: str, timeout: float, body: dict | None = None) -> dict:
        """The answer's JSON document, read within `timeout` in all (requests' own timeout bounds
        each read alone: a server sending a byte a second would hold the call for ever) and at most
        MAX_ANSWER_BYTES of it."""
        deadline = time.monotonic() + timeout
        late = ServingClientError("DEADLINE_EXCEEDED", f"no answer from {self.url} in {timeout}s")
        try:
            with self._session.request(method, url, json=body, timeout=timeout, stream=True) as reply:
                content = _bounded_body(reply, deadline)
        except (TimeoutError, urllib3.exceptions.TimeoutError):
            raise late from None
        except urllib3.exceptions.DecodeError:  # a compressed answer that does not inflate: no use again
            raise ServingClientError(
                "UNKNOWN", f"{self.url} answered with a body that does not decode"
            ) from None
        except urllib3.exceptions.HTTPError as err:  # the body cut short, read here and not by requests
            raise ServingClientError("UNAVAILABLE", f"lost {self.url}: {_first_cause(err)}") from None
        except requests.ConnectionError as err:
            if isinstance(_root_cause(err), requests.ReadTimeout | TimeoutError):
                raise late from None
            if isinstance(_root_cause(err), http.client.BadStatusLine):  # no HTTP/1: gRPC's port?
                raise ServingClientError(
                    "UNKNOWN", f"{self.url} does not speak HTTP/1.1 (is that the gRPC port? use --grpc)"
                ) from None
            raise ServingClientError("UNAVAILABLE", f"cannot reach {self.url}: {_first_cause(err)}") from None
        except requests.Timeout:
            raise late from None
        except requests.RequestException as err:  # a connection cut mid-answer, say
            raise ServingClientError("UNAVAILABLE", f"lost {self.url}: {_first_cause(err)}") from None
        try:
            document = json.loads(content)
        except (ValueError, RecursionError):  # not JSON, or nested past Python's stack
            document = None
        status = HTTP_STATUS_NAMES.get(reply.status_code, "UNKNOWN")
        if isinstance(document, dict):
            if reply.status_code != 200:
                raise ServingClientError(status, str(document.get("error", document)))
            return document
        # TF Serving answers JSON objects only, its errors too. A refusal in plain text (the server's own
        # connection cap, say) is given in its first line; anything else (a web page, a balancer's error
        # page, nothing) is named by its status and type, never shown.
        kind = (reply.headers.get("content-type") or "no content type").split(";")[0].strip()
        said = content.decode(reply.encoding or "utf-8", "replace").strip()
        if reply.status_code != 200 and kind == "text/plain" and said:
            raise ServingClientError(status, said.splitlines()[0][:200])
        raise ServingClientError(
            status, f"{self.url} did not answer as a TF Serving REST API (HTTP {reply.status_code}, {kind})"
        )

    def predict(
        self, images: np.ndarray, model: str, version: int | None, label: str | None, timeout: float
    ) -> tuple[np.ndarray, int]:
        """REST predictions do not name the version that answered, so when the caller does not fix one,
        the version is resolved first (the latest, or the label's) and the prediction sent to it: the
        version reported is the one that answered. Should it be unloaded in between, once more."""
        body = {"inputs": {INPUT: images.tolist()}}
        target = version if version is not None else self._answering_version(model, label, timeout)
        try:
            document = self._call("POST", f"{self._path(model, target, None)}:predict", timeout, body)
        except ServingClientError as err:
            if err.status != "NOT_FOUND" or version is not None:
                raise
            target = self._answering_version(model, label, timeout)  # unloaded meanwhile: once more
            document = self._call("POST", f"{self._path(model, target, None)}:predict", timeout, body)
        return self._read(
            lambda: np.asarray(document["outputs"][PROBABILITIES], dtype=np.float32), document
        ), target

    def _answering_version(self, model: str, label: str | None, timeout: float) -> int:
        metadata = self.metadata(model, None, label, timeout)
        return self._read(lambda: int(metadata["model_spec"]["version"]), metadata)

    def status(self, model: str, version: int | None, timeout: float) -> list[VersionStatus]:
        document = self._call("GET", self._path(model, version, None), timeout)
        return self._read(
            lambda: [
                VersionStatus(
                    int(s["version"]), s["state"], s["status"]["error_code"], s["status"]["error_message"]
                )
                for s in document["model_version_status"]
            ],
            document,
        )

    def _read(self, fields: Callable[[], T], document: dict) -> T:
        """The fields a reply of TF Serving's holds; a server that answers 200 without them (another
        web server at that address) is an error in one line, not a KeyError."""
        try:
            return fields()
        except (KeyError, IndexError, TypeError, ValueError):
            words = " ".join(str(document).split())[:100]
            raise ServingClientError(
                "UNKNOWN", f"{self.url} did not answer as a TF Serving REST API ({words})"
            ) from None

    def metadata(self, model: str, version: int | None, label: str | None, timeout: float) -> dict:
        return self._call("GET", f"{self._path(model, version, label)}/metadata", timeout)


def _bounded_body(reply: requests.Response, deadline: float) -> bytes:
    """The answer's body, read as it arrives until `deadline` (TimeoutError past it), refused past
    MAX_ANSWER_BYTES."""
    parts, size = [], 0
    while chunk := reply.raw.read1(1 << 16, decode_content=True):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ServingClientError(
                "UNKNOWN", f"{reply.url} answered more than {MAX_ANSWER_BYTES >> 20} MB: no TF Serving answer"
            )
        if time.monotonic() > deadline:
            raise TimeoutError
        parts.append(chunk)
    return b"".join(parts)


def _root_cause(err: BaseException) -> BaseException:
    """The failure under a chain of wrappers."""
    cause = err.__cause__ or err.__context__
    while cause is not None:
        err, cause = cause, cause.__cause__ or cause.__context__
    return err


def _first_cause(err: BaseException) -> str:
    """The words of the failure under a chain of wrappers (`Connection refused`, not urllib3's
    hundreds of characters about its connection pool)."""
    root = _root_cause(err)
    return getattr(root, "strerror", None) or str(root)


# HTTP status -> the gRPC status name TF Serving maps to it (serving/errors.py holds the other way).
HTTP_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",  # not TF Serving's: a proxy in front of it that reached no server
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# gRPC waits up to two minutes between attempts to reach a server that has gone (its default backoff):
# a long-lived client, such as the dashboard's, then said "not answering" for seconds to minutes after
# the server was back.
MAX_RECONNECT_BACKOFF_MS = 2000


@functools.cache
def _channel(target: str) -> Any:
    """One channel per target for the whole process: gRPC multiplexes every call over it."""
    import grpc

    return grpc.insecure_channel(
        target, options=[("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)]
    )


def _as_json(message: Message) -> dict:
    from google.protobuf import json_format

    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _pack_floats(array: np.ndarray, proto: tensor_pb2.TensorProto) -> None:
    """A float32 TensorProto written directly, its values as packed bytes (tf.make_tensor_proto costs
    tens of microseconds a call for the same result)."""
    proto.dtype = types_pb2.DT_FLOAT
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    proto.tensor_content = np.ascontiguousarray(array, dtype="<f4").tobytes()


def _unpack_floats(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A float32 TensorProto's values, in float_val (as TF Serving answers by default) or packed in
    tensor_content (--enable_serialization_as_tensor_content); a shape its values do not fill is an
    error in one line."""
    shape = [dim.size for dim in proto.tensor_shape.dim]
    packed = proto.tensor_content
    count = len(packed) // 4 if packed else len(proto.float_val)
    if (packed and len(packed) % 4) or min(shape, default=0) < 0 or count != math.prod(shape):
        raise ServingClientError(
            "UNKNOWN", f"the server answered a tensor of shape {shape} that its values do not fill"
        )
    values = np.frombuffer(packed, dtype="<f4") if packed else np.asarray(proto.float_val, dtype=np.float32)
    return values.reshape(shape)


class GrpcTransport(Transport):
    """tensorflow-serving-api's stubs over one shared channel."""

    def __init__(self, target: str) -> None:
        self.target = target
        channel = _channel(target)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(channel)

    @staticmethod
    def _spec(spec: model_pb2.ModelSpec, model: str, version: int | None, label: str | None) -> None:
        spec.name = model
        if version is not None:
            spec.version.value = version
        elif label is not None:
            spec.version_label = label

    def _call(self, method: Callable[..., T], request: Message, timeout: float) -> T:
        import grpc

        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as err:
            details = err.details() or err.code().name
            if err.code() == grpc.StatusCode.UNAVAILABLE:  # the addresses tried, as `ipv6:%5B::1%5D:8500`
                details = unquote(details)
            if details == "Deadline Exceeded":  # gRPC's own words, when the server said nothing
                details = f"no answer from {self.target} in {timeout}s"
            raise ServingClientError(err.code().name, details) from None

    def predict(
        self, images: np.ndarray, model: str, version: int | None, label: str | None, timeout: float
    ) -> tuple[np.ndarray, int]:
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, label)
        _pack_floats(images, request.inputs[INPUT])
        request.output_filter.append(PROBABILITIES)
        reply = self._call(self._predictions.Predict, request, timeout)
        if PROBABILITIES not in reply.outputs or reply.outputs[PROBABILITIES].dtype != types_pb2.DT_FLOAT:
            raise ServingClientError(
                "UNKNOWN",
                f"{self.target} answered no float {PROBABILITIES!r} output: is it serving an MNIST model?",
            )
        return _unpack_floats(reply.outputs[PROBABILITIES]), reply.model_spec.version.value

    def status(self, model: str, version: int | None, timeout: float) -> list[VersionStatus]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, None)
        reply = self._call(self._models.GetModelStatus, request, timeout)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            VersionStatus(
                s.version,
                state_name(s.state),
                error_codes_pb2.Code.Name(s.status.error_code),
                s.status.error_message,
            )
            for s in reply.model_version_status
        ]

    def metadata(self, model: str, version: int | None, label: str | None, timeout: float) -> dict:
        metadata_pb2 = get_model_metadata_pb2
        request = metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, label)
        reply = self._call(self._predictions.GetModelMetadata, request, timeout)
        signatures = metadata_pb2.SignatureDefMap()
        reply.metadata["signature_def"].Unpack(signatures)
        return {"model_spec": _as_json(reply.model_spec), "metadata": {"signature_def": _as_json(signatures)}}
