"""tfs_api: TF Serving's API generated into this repository, held to tensorflow-serving-api's own modules.

The generated modules must carry the very file descriptors the installed ones do (so messages are the
same on the wire and in text format), live beside them in one process (the server and the trainer
import both), and be what `make protos` writes today. They must not need TensorFlow.
"""

from __future__ import annotations

import filecmp
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tfs_api import regenerate


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.fast
def test_the_api_imports_without_tensorflow() -> None:
    out = run_python(
        "import sys; sys.modules['tensorflow'] = None\n"
        "from tfs_api.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc\n"
        "from tfs_api.tensorflow_serving.config import model_server_config_pb2\n"
        "from tfs_api import batching_pb2, monitoring_pb2\n"
        "print(predict_pb2.PredictRequest.DESCRIPTOR.full_name)"
    )
    assert out.strip() == "tensorflow.serving.PredictRequest"


@pytest.fixture(scope="module")
def installed() -> dict[str, object]:
    return dict(regenerate.installed_files())


def generated_module(proto_file: str) -> object:
    return importlib.import_module("tfs_api." + proto_file.removesuffix(".proto").replace("/", ".") + "_pb2")


def test_every_file_descriptor_is_the_installed_one_byte_for_byte(installed: dict[str, object]) -> None:
    files = [name for name in installed if not name.startswith("google/")]
    assert len(files) > 40
    for name in files:
        ours = generated_module(name).DESCRIPTOR  # type: ignore[attr-defined]
        assert ours.serialized_pb == installed[name].serialized_pb, name  # type: ignore[attr-defined]


def test_messages_round_trip_bytes_and_text_both_ways() -> None:
    from google.protobuf import text_format
    from tensorflow_serving.apis import predict_pb2 as theirs
    from tensorflow_serving.config import model_server_config_pb2 as their_config

    from tfs_api.tensorflow.core.framework import types_pb2
    from tfs_api.tensorflow_serving.apis import predict_pb2 as ours
    from tfs_api.tensorflow_serving.config import model_server_config_pb2 as our_config

    request = ours.PredictRequest(output_filter=["probabilities"])
    request.model_spec.name, request.model_spec.version.value = "mnist", 7
    request.inputs["images"].dtype = types_pb2.DT_FLOAT
    request.inputs["images"].tensor_content = bytes(range(256))
    wire = request.SerializeToString()
    assert theirs.PredictRequest.FromString(wire).SerializeToString() == wire
    assert (
        ours.PredictRequest.FromString(theirs.PredictRequest.FromString(wire).SerializeToString()) == request
    )
    text = (ROOT / "serving" / "config" / "models.config").read_text()
    parsed = text_format.Parse(text, our_config.ModelServerConfig())
    assert text_format.MessageToString(text_format.Parse(text, their_config.ModelServerConfig())) == (
        text_format.MessageToString(parsed)
    )


@pytest.mark.parametrize("first", ["ours", "theirs"])
def test_both_sets_of_modules_live_in_one_process_as_one(first: str) -> None:
    """Whichever is imported first, the second registers byte-identical files, which protobuf's pool
    takes once: the message classes are the same objects, so a message from one is the other's."""
    modules = {
        "ours": "tfs_api.tensorflow_serving.apis.predict_pb2",
        "theirs": "tensorflow_serving.apis.predict_pb2",
    }
    second = "theirs" if first == "ours" else "ours"
    out = run_python(
        "import importlib\n"
        "from tfquiet import import_tensorflow\n"
        f"{'import_tensorflow()' if first == 'theirs' else ''}\n"
        f"a = importlib.import_module({modules[first]!r})\n"
        "import_tensorflow()\n"
        f"b = importlib.import_module({modules[second]!r})\n"
        "import tensorflow_serving.apis.prediction_service_pb2_grpc\n"
        "import tfs_api.tensorflow_serving.apis.prediction_service_pb2_grpc\n"
        "print(a.PredictRequest is b.PredictRequest)"
    )
    assert out.strip().endswith("True")


def test_the_package_is_what_make_protos_writes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "tfs_api.regenerate", f"--into={tmp_path}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    package = ROOT / "tfs_api"
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    kept = sorted(
        p.relative_to(package)
        for p in package.rglob("*")
        if p.is_file() and "proto" not in p.relative_to(package).parts[:1] and "__pycache__" not in p.parts
    )
    assert written == [
        p for p in kept if p.name not in ("regenerate.py", "py.typed") and p != Path("__init__.py")
    ]
    for path in written:
        assert filecmp.cmp(tmp_path / path, package / path, shallow=False), (
            f"{path} is stale: run make protos"
        )
