"""TLS at the balancer (deploy/haproxy/tls.yml): with a certificate the test makes, a client that trusts
it gets answers over gRPC and REST; a plaintext client to the same ports gets none."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from tests.conftest import ROOT, wait_for
from tests.docker.conftest import ComposeProject
from tests.docker.engine import Engine


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the certificate, for clients to trust; the PEM with certificate and key, for the balancer)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    bundle = folder / "balancer.pem"
    bundle.write_bytes(cert.read_bytes() + key.read_bytes())
    bundle.chmod(0o644)  # readable by the balancer's own user inside its container
    folder.chmod(0o755)
    return cert, bundle


@pytest.fixture(scope="module")
def tls(engine: Engine, certificate: tuple[Path, Path]) -> Iterator[ComposeProject]:
    project = ComposeProject(
        engine,
        overrides=(ROOT / "deploy" / "haproxy" / "tls.yml",),
        extra_env={"TLS_PEM": str(certificate[1])},
    )
    project.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")
    result = project.run("--profile", "embedded", "up", "--build", "--wait")
    assert result.returncode == 0, result.stderr[-3000:]
    yield project
    project.run("--profile", "embedded", "down", "--volumes", "--remove-orphans")


def model_status(channel: grpc.Channel) -> list[int]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mnist"
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=5)
    return [status.version for status in reply.model_version_status]


def test_clients_that_trust_the_certificate_get_answers_and_plaintext_gets_none(
    tls: ComposeProject, certificate: tuple[Path, Path]
) -> None:
    cert = certificate[0]
    grpc_port, rest_port = tls.ports["GRPC_PORT"], tls.ports["REST_PORT"]
    trusted = grpc.secure_channel(
        f"localhost:{grpc_port}", grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    )
    url = f"https://localhost:{rest_port}/v1/models/mnist"

    def rest_answers() -> bool:
        try:
            return requests.get(url, verify=str(cert), timeout=5).ok
        except requests.RequestException:
            return False

    wait_for(rest_answers, 30, "REST over TLS through the balancer")
    assert (
        requests.get(url, verify=str(cert), timeout=5).json()["model_version_status"][0]["state"]
        == "AVAILABLE"
    )
    assert model_status(trusted) == [1]

    with pytest.raises(grpc.RpcError) as refused:
        model_status(grpc.insecure_channel(f"localhost:{grpc_port}"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(requests.RequestException):
        requests.get(f"http://localhost:{rest_port}/v1/models/mnist", timeout=5).raise_for_status()
    with pytest.raises(requests.exceptions.SSLError):  # and a client that does not trust it
        requests.get(url, timeout=5)
