"""Regenerate this package from the protos that tensorflow-serving-api and TensorFlow carry (`make protos`).

Needs the development environment (TensorFlow, tensorflow-serving-api, grpcio-tools, mypy-protobuf);
what it writes needs none of them. No .proto source is copied: the file descriptors the installed
generated modules were built from are handed to protoc (`--descriptor_set_in`), with this package's
own two files for the config messages tensorflow-serving-api lacks (proto/tfs_api/*.proto). The
modules keep the protos' file names, packages and full names, so their messages are TF Serving's on the
wire and in text format; only their Python module paths move under `tfs_api.`.

    python -m tfs_api.regenerate            # rewrite the package in place
    python -m tfs_api.regenerate --into DIR # write it elsewhere (the test compares the two)
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor, descriptor_pb2

PACKAGE = Path(__file__).resolve().parent
# The API's modules in tensorflow-serving-api; everything they import comes along.
ROOTS = [
    *(
        f"tensorflow_serving.apis.{name}_pb2"
        for name in (
            "predict",
            "classification",
            "regression",
            "get_model_metadata",
            "get_model_status",
            "model_management",
            "model_service",
            "prediction_service",
            "prediction_log",
        )
    ),
    "tensorflow_serving.config.model_server_config_pb2",
]
OWN_PROTOS = sorted((PACKAGE / "proto").rglob("*.proto"))
GENERATED_DIRS = ("tensorflow", "tensorflow_serving", "xla")
# Top-level Python packages of the generated modules' imports, moved under this package.
MOVED = "tensorflow_serving|tensorflow|xla"


def installed_files() -> dict[str, descriptor.FileDescriptor]:
    """The installed modules' file descriptors, each after the files it imports."""
    from tfquiet import import_tensorflow

    import_tensorflow()  # the installed modules import TensorFlow's own
    found: dict[str, descriptor.FileDescriptor] = {}

    def add(file: descriptor.FileDescriptor) -> None:
        if file.name not in found:
            for dependency in file.dependencies:
                add(dependency)
            found[file.name] = file

    for module in ROOTS:
        add(importlib.import_module(module).DESCRIPTOR)
    return found


def _relocated(text: str, stub: bool) -> str:
    """A generated file with its imports (and a stub's qualified names) moved under `tfs_api.`; the
    serialized descriptors inside are left as they are."""
    text = re.sub(rf"^(from|import) ({MOVED})\b", r"\1 tfs_api.\2", text, flags=re.MULTILINE)
    if stub:
        text = re.sub(rf"(?<![\w.'\"/])({MOVED})\.(?=\w+\.)", r"tfs_api.\1.", text)
    return text.replace(
        "BuildTopDescriptorsAndMessages(DESCRIPTOR, '", "BuildTopDescriptorsAndMessages(DESCRIPTOR, 'tfs_api."
    )


def generate(into: Path) -> None:
    files = installed_files()
    with tempfile.TemporaryDirectory() as scratch:
        descriptor_set = descriptor_pb2.FileDescriptorSet()
        for file in files.values():
            descriptor_set.file.add().ParseFromString(file.serialized_pb)
        set_path = Path(scratch) / "installed.pb"
        set_path.write_bytes(descriptor_set.SerializeToString())
        out = Path(scratch) / "out"
        out.mkdir()
        bin_dir = Path(sys.executable).parent
        protoc = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"--descriptor_set_in={set_path}",
                f"--proto_path={PACKAGE / 'proto'}",
                f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
                f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--mypy_out={out}",
                f"--mypy_grpc_out={out}",
                *(name for name in files if not name.startswith("google/")),
                *(str(path.relative_to(PACKAGE / "proto")) for path in OWN_PROTOS),
            ],
            capture_output=True,  # mypy-protobuf names every file it writes
            text=True,
        )
        if protoc.returncode:
            raise SystemExit(f"protoc failed: {protoc.stderr}")
        for path in sorted(out.rglob("*")):
            if path.is_dir() or ("_pb2_grpc.py" in path.name and "service" not in path.name):
                continue  # protoc writes a _grpc module for every file; only the services have stubs
            text = path.read_text()
            relative = path.relative_to(out)
            if relative.parts[0] == "tfs_api":  # this package's own protos: already where they belong
                relative = relative.relative_to("tfs_api")
            else:
                text = _relocated(text, stub=path.suffix == ".pyi")
            (into / relative).parent.mkdir(parents=True, exist_ok=True)
            (into / relative).write_text(text)
    for directory in {path.parent for path in into.rglob("*.py")}:
        while directory != into and not (directory / "__init__.py").exists():
            (directory / "__init__.py").write_text("")
            directory = directory.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tfs_api.regenerate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--into", type=Path, default=PACKAGE, help="the folder to write (default: this package)"
    )
    args = parser.parse_args()
    if args.into == PACKAGE:
        for name in GENERATED_DIRS:
            shutil.rmtree(PACKAGE / name, ignore_errors=True)
        for own in PACKAGE.glob("*_pb2*.py*"):
            own.unlink()
    generate(args.into)


if __name__ == "__main__":
    main()
