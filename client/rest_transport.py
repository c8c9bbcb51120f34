"""TF Serving's REST API with `requests`, each call bounded in time and in the size of its answer."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

import numpy as np
import requests
import urllib3

from client import deadline_http
from client.transport import ServingClientError, Transport, VersionStatus
from contract.signature import INPUT, PROBABILITIES

# The most a REST answer may be: 1,000 images' probabilities are about 150 KB. A server that sends
# more (or without end) is no TF Serving, and its answer is not read into memory whole.
MAX_ANSWER_BYTES = 64 << 20
T = TypeVar("T")


class RestTransport(Transport):
    """TF Serving's REST API with `requests`; no TensorFlow needed on this side."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._local = threading.local()  # a requests.Session is not thread-safe: one per thread

    @property
    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = deadline_http.session()
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
        each read alone: a server sending a byte a second would hold the call for ever; the session's
        watchdog ends the wait for the headers, `_bounded_body` the body) and at most MAX_ANSWER_BYTES
        of it."""
        deadline = time.monotonic() + timeout
        late = ServingClientError("DEADLINE_EXCEEDED", f"no answer from {self.url} in {timeout}s")
        try:
            with (
                deadline_http.deadline(deadline),
                self._session.request(method, url, json=body, timeout=timeout, stream=True) as reply,
            ):
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
