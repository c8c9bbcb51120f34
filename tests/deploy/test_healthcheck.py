"""The replicas' health check (docker-compose.yml's healthcheck, deploy/k8s's readiness and start-up
probes) run by bash against a real HTTP server: healthy only while a version's state is AVAILABLE,
in TF Serving's spaced JSON and in ours, whatever error codes the status carries."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.fast

AVAILABLE_OURS = (
    b'{"model_version_status":[{"version":"2","state":"AVAILABLE","status":{"error_code":"OK"}}]}'
)
AVAILABLE_TF_SERVING = b"""{
 "model_version_status": [
  {
   "version": "2",
   "state": "AVAILABLE",
   "status": {
    "error_code": "OK",
    "error_message": ""
   }
  }
 ]
}
"""
# A version whose load failed with UNAVAILABLE: the word is there, the state is not.
FAILED = b'{"model_version_status":[{"version":"2","state":"END","status":{"error_code":"UNAVAILABLE"}}]}'


@pytest.fixture
def status_server() -> Iterator[tuple[http.server.HTTPServer, list[bytes]]]:
    body: list[bytes] = [b""]

    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body[0])))
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, body
    server.shutdown()
    server.server_close()


STATUSES = pytest.mark.parametrize(
    ("status", "healthy"),
    [(AVAILABLE_OURS, True), (AVAILABLE_TF_SERVING, True), (FAILED, False)],
    ids=["ours", "tf-serving", "failed-unavailable"],
)


@STATUSES
def test_the_check_passes_only_on_an_available_version(
    status_server: tuple[http.server.HTTPServer, list[bytes]], status: bytes, healthy: bool
) -> None:
    server, body = status_server
    body[0] = status
    check = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-serving"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "bash", "-c"] and "/127.0.0.1/8501" in check[3]
    script = check[3].replace("/127.0.0.1/8501", f"/127.0.0.1/{server.server_address[1]}")
    result = subprocess.run(["bash", "-c", script], capture_output=True, timeout=10)
    assert (result.returncode == 0) is healthy, result.stderr


@STATUSES
def test_the_balancer_checks_the_same_way(status: bytes, healthy: bool) -> None:
    """deploy/haproxy/haproxy.cfg's `http-check expect rstring`, a regular expression as simple in
    HAProxy's dialect as in Python's, for both backends."""
    lines = (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text().splitlines()
    expected = [line.split("rstring", 1)[1].strip() for line in lines if "http-check expect" in line]
    assert len(expected) == 2 and all("rstring" in line for line in lines if "http-check expect" in line)
    for quoted in expected:
        assert quoted.startswith('"') and quoted.endswith('"')
        pattern = quoted[1:-1].replace('\\"', '"')  # HAProxy's escaped quote
        assert (re.search(pattern.encode(), status) is not None) is healthy, pattern
