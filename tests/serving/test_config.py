"""Config files as TF Serving reads them: several models, version policies, labels, reload, batching."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.config_files import ConfigError, check_model_config, read_model_config
from serving.settings import EXAMPLES, parse_flags
from tests.conftest import ROOT, ServerProcess, example_commands, free_port, start_server, wait_for
from tests.serving.conftest import predict_request
from tfquiet import import_tensorflow

import_tensorflow()
import tensorflow as tf  # noqa: E402

TWO_MODELS = """
model_config_list {{
  config {{
    name: "mnist"  base_path: "{base}"  model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "digits"  base_path: "{base}"  model_platform: "tensorflow" }}
}}
"""


@pytest.fixture
def two_versions(trained_model_dir: Path, tmp_path: Path) -> Path:
    base = tmp_path / "mnist"
    for version in ("1", "2"):
        shutil.copytree(trained_model_dir / "mnist" / "1", base / version)
    return base


def test_model_config_file_policies_labels_and_reload(
    two_versions: Path, tmp_path: Path, images: np.ndarray
) -> None:
    config = tmp_path / "models.config"
    config.write_text(TWO_MODELS.format(base=two_versions))
    server = start_server(f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models")
    try:
        wait_for(
            lambda: server.model_states("mnist") == {2: "AVAILABLE", 1: "AVAILABLE"}, 30, "both versions"
        )
        wait_for(lambda: server.model_states("digits") == {2: "AVAILABLE"}, 30, "digits' latest version")
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for label, version in (("stable", 1), ("canary", 2)):
                reply = stub.Predict(predict_request(images[:1], version_label=label), timeout=10)
                assert reply.model_spec.version.value == version
            rest = requests.post(
                f"{server.rest_url}/v1/models/mnist/labels/stable:predict",
                json={"instances": images[:1].tolist()},
                timeout=10,
            )
            assert rest.status_code == 200

            new_config = model_server_config_pb2.ModelServerConfig()
            new_config.model_config_list.config.add(
                name="digits", base_path=str(two_versions), model_platform="tensorflow"
            )
            reload = model_management_pb2.ReloadConfigRequest(config=new_config)
            answer = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                reload, timeout=30
            )
            assert answer.HasField("status") and answer.status.error_code == 0  # as TF Serving answers
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(predict_request(images[:1]), timeout=10)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            assert (
                stub.Predict(predict_request(images[:1], name="digits"), timeout=10).model_spec.version.value
                == 2
            )
    finally:
        assert server.stop() == 0


def test_a_reload_call_answers_once_its_new_models_are_available_and_names_those_that_failed(
    two_versions: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """As ServerCore::ReloadConfig: the call waits, with no limit but the caller's deadline, until
    each model new by name has a version AVAILABLE, so a prediction right after it is answered; a
    model whose first version failed makes it UNKNOWN in TF Serving's words. A model the reload
    removed still reports its versions, END."""
    later, broken = tmp_path / "later", tmp_path / "broken"
    later.mkdir()
    (broken / "3").mkdir(parents=True)
    (broken / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={two_versions}",
        "--file_system_poll_wait_seconds=1",
        f"--allowed_base_path_roots={tmp_path}",
        "--max_num_load_retries=0",  # else the broken version is retried for 5 minutes before it fails
    )

    def reload(timeout: float, *models: tuple[str, Path]) -> grpc.StatusCode | str:
        new = model_server_config_pb2.ModelServerConfig()
        for name, base_path in models:
            new.model_config_list.config.add(name=name, base_path=str(base_path), model_platform="tensorflow")
        with grpc.insecure_channel(server.grpc_target) as channel:
            try:
                model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(config=new), timeout=timeout
                )
            except grpc.RpcError as err:
                return err.code() if err.code() != grpc.StatusCode.UNKNOWN else err.details()
        return grpc.StatusCode.OK

    try:
        assert reload(1, ("mnist", two_versions), ("later", later)) == grpc.StatusCode.DEADLINE_EXCEEDED
        with ThreadPoolExecutor(1) as waiting:
            answer = waiting.submit(reload, 60, ("mnist", two_versions), ("again", later))
            shutil.copytree(two_versions / "2", later / ".7")  # copied aside, then renamed into place
            (later / ".7").rename(later / "7")  # as the trainer publishes: no poll sees half of it
            assert answer.result() == grpc.StatusCode.OK
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            reply = stub.Predict(predict_request(images[:1], name="again"), timeout=10)  # no waiting here
            assert reply.model_spec.version.value == 7

        with ThreadPoolExecutor(1) as waiting:  # a later config takes out the model a call waits for
            pending = tmp_path / "pending"
            pending.mkdir()
            answer = waiting.submit(reload, 60, ("again", later), ("pending", pending))
            # Reloads without "pending", until one lands after the waiting call adopted it and ends its wait.
            wait_for(
                lambda: reload(1, ("again", later)) == grpc.StatusCode.OK and answer.done(),
                30,
                "the wait to end",
            )
            assert answer.result() == (
                "1 model(s) did not become available: "
                "{{{name: pending} removed by a later config before any version settled}, }"
            )

        with grpc.insecure_channel(server.grpc_target) as channel:  # model_service_impl.cc:51-69
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            empty, custom = (
                model_server_config_pb2.ModelServerConfig(),
                model_server_config_pb2.ModelServerConfig(),
            )
            custom.custom_model_config.type_url = "type.googleapis.com/a.CustomConfig"
            for other in (empty, custom):
                with pytest.raises(grpc.RpcError) as refused:
                    stub.HandleReloadConfigRequest(
                        model_management_pb2.ReloadConfigRequest(config=other), timeout=10
                    )
                assert (refused.value.code(), refused.value.details()) == (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported",
                )

        failed = reload(60, ("again", later), ("broken", broken))
        assert isinstance(failed, str) and re.fullmatch(
            r"1 model\(s\) did not become available: \{\{\{name: broken version: 3\} due to error: "
            r"DATA_LOSS: Failed to load broken version 3 from \S+: Can't parse \S+/saved_model.pb as "
            r"binary proto\}, \}",
            failed,
            re.DOTALL,
        ), failed
        assert server.model_states("broken") == {3: "END"}
        assert server.model_states("mnist") == {2: "END"}  # removed by the reload, and still reported
    finally:
        assert server.stop() == 0


def labelled_version(server: ServerProcess, images: np.ndarray, label: str = "stable") -> int:
    """The version that answers a prediction asked for by label."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.Predict(predict_request(images[:1], version_label=label), timeout=10)
        return reply.model_spec.version.value


PINNED = """
model_config_list {{
  config {{
    name: "mnist"  base_path: "/models/mnist"  model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: {stable} }}
  }}
}}
"""


def test_watched_config_file_moves_a_label_and_maps_container_paths(
    two_versions: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """The compose stack's config file as `make up` runs it: /models/... read from the host directory,
    and an edited label adopted without a restart; a broken edit keeps the last good config."""
    config = tmp_path / "models.config"
    config.write_text(PINNED.format(stable=1))
    server = start_server(
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        f"--base_path_map=/models={two_versions.parent}",
        "--allow_version_labels_for_unavailable_models=true",
    )

    try:
        wait_for(lambda: server.model_states() == {2: "AVAILABLE", 1: "AVAILABLE"}, 30, "both versions")
        assert labelled_version(server, images) == 1
        config.write_text(PINNED.format(stable=2))
        wait_for(lambda: labelled_version(server, images) == 2, 10, "the label to move to version 2")
        log: list[str] = []
        threading.Thread(target=lambda: log.extend(server.process.stderr or ()), daemon=True).start()
        config.write_text(PINNED.format(stable=1).replace("specific", "no_such_policy"))
        wait_for(lambda: any("keeping the previous config" in line for line in log), 10, "the error logged")
        assert labelled_version(server, images) == 2
    finally:
        assert server.stop() == 0


def test_a_refused_config_is_tried_again_until_it_can_be_adopted(
    trained_model_dir: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """A label moved to a version that is not there yet is refused, and adopted at a later poll once
    the version is AVAILABLE, as TF Serving's config polling does."""
    base = tmp_path / "mnist"
    shutil.copytree(trained_model_dir / "mnist" / "1", base / "1")
    config = tmp_path / "models.config"
    labelled = (
        'model_config_list {{ config {{ name: "mnist" base_path: "{base}" model_platform: "tensorflow"'
        " model_version_policy {{ all {{}} }}"
    )
    labelled += ' version_labels {{ key: "stable" value: {stable} }} }} }}'
    config.write_text(labelled.format(base=base, stable=1))
    server = start_server(
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds=1",
        "--allow_version_labels_for_unavailable_models",
    )
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(server.process.stderr or ()), daemon=True).start()

    try:
        config.write_text(labelled.format(base=base, stable=2))
        wait_for(lambda: any("not currently available" in line for line in log), 10, "the refusal logged")
        assert labelled_version(server, images) == 1
        shutil.copytree(trained_model_dir / "mnist" / "1", base / ".staging")
        (base / ".staging").rename(base / "2")  # published whole, as the trainer does
        wait_for(
            lambda: labelled_version(server, images) == 2,
            30,
            "the label to follow once version 2 is AVAILABLE",
        )
    finally:
        assert server.stop() == 0


def test_labels_name_only_available_versions_as_in_tf_serving(
    two_versions: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """A label may point only at an AVAILABLE version, so moving one never strands its traffic on a
    version still loading; the flag lets a new label point anywhere, not an existing one move."""
    config = tmp_path / "models.config"
    config.write_text(PINNED.format(stable=1).replace("/models/mnist", str(two_versions)))
    refused = subprocess.run(
        [sys.executable, "-m", "serving", f"--port={free_port()}", f"--model_config_file={config}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--allow_version_labels_for_unavailable_models" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    (two_versions / "3").mkdir()  # a version that will never load
    server = start_server(f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models")

    def reload(stable: int, **labels: int) -> grpc.StatusCode:
        new = model_server_config_pb2.ModelServerConfig()
        model = new.model_config_list.config.add(
            name="mnist", base_path=str(two_versions), model_platform="tensorflow"
        )
        model.model_version_policy.all.SetInParent()
        model.version_labels["stable"] = stable
        model.version_labels.update(labels)
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            try:
                stub.HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(config=new), timeout=30
                )
            except grpc.RpcError as err:
                assert "not currently available" in err.details()
                return err.code()
        return grpc.StatusCode.OK

    try:
        wait_for(lambda: server.model_states() == {2: "AVAILABLE", 1: "AVAILABLE"}, 30, "both versions")
        assert reload(stable=3) == grpc.StatusCode.FAILED_PRECONDITION  # an existing label, moved
        assert reload(stable=1, canary=3) == grpc.StatusCode.OK  # a new label, allowed by the flag
        assert reload(stable=2) == grpc.StatusCode.OK  # moved to an AVAILABLE version
        assert labelled_version(server, images) == 2
    finally:
        assert server.stop() == 0


def test_batching_merges_concurrent_requests(
    trained_model_dir: Path, tmp_path: Path, images: np.ndarray, in_process: dict[str, np.ndarray]
) -> None:
    params = tmp_path / "batching.config"
    params.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 20000 }\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 4 }\n"
    )
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        "--enable_batching",
        f"--batching_parameters_file={params}",
        f"--monitoring_config_file={monitoring}",
    )
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with ThreadPoolExecutor(16) as pool:
                replies = list(
                    pool.map(
                        lambda i: stub.Predict(predict_request(images[i % 8 : i % 8 + 1]), timeout=30),
                        range(16),
                    )
                )
            for i, reply in enumerate(replies):
                np.testing.assert_allclose(
                    tf.make_ndarray(reply.outputs["probabilities"])[0],
                    in_process["probabilities"][i % 8],
                    rtol=1e-5,
                    atol=1e-7,
                )
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(predict_request(np.zeros((9, 28, 28, 1), np.float32)), timeout=10)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Task size 9 is larger than maximum input batch size 8" in raised.value.details()
        metrics = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=5).text
        name = ":tensorflow:serving:batching_session:processed_batch_size"
        count = float(metrics.split(f"{name}_count ")[1].split()[0])
        total = float(metrics.split(f"{name}_sum ")[1].split()[0])
        assert total == 16 + 1 + 8  # the requests and the two warm-up requests
        assert count < 16 + 2, "concurrent requests were never merged"
    finally:
        assert server.stop() == 0


def run_server_cli(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving", *flags], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_help_examples_start_a_server_with_those_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the examples' paths are the project's
    examples = example_commands(EXAMPLES, "python -m serving")
    assert len(examples) == 3
    for argv in examples:
        assert parse_flags(argv).port == 8500  # the files they name exist and parse


@pytest.mark.parametrize(
    ("flags", "iterations"),
    [
        ((), 1),
        (("--num_request_iterations_for_warmup=3",), 3),
        (("--num_request_iterations_for_warmup=-2",), 1),  # used only if > 0 (server.cc:288-292)
        (("--num_request_iterations_for_warmup=3", "--enable_model_warmup=false"), 0),
    ],
)
def test_warm_up_replays_each_record_as_often_as_tf_serving_would(
    flags: tuple[str, ...], iterations: int
) -> None:
    assert parse_flags(["--model_base_path=/tmp", *flags]).warmup_iterations == iterations


# Every flag of tensorflow_model_server 2.20.0 (model_servers/main.cc:86-315), each at its default
# there (model_servers/server.h), so that a TF Serving command line runs here unchanged.
TF_SERVING_FLAGS = {
    "port": "8500", "grpc_socket_path": "", "rest_api_port": "0", "rest_api_num_threads": "16",
    "rest_api_timeout_in_ms": "30000", "rest_api_enable_cors_support": "false", "enable_batching": "false",
    "allow_version_labels_for_unavailable_models": "false", "batching_parameters_file": None,
    "enable_per_model_batching_parameters": "false", "model_config_file": None,
    "model_config_file_poll_wait_seconds": "0", "model_name": "default", "model_base_path": "/tmp",
    "num_load_threads": "0", "num_unload_threads": "0", "max_num_load_retries": "5",
    "load_retry_interval_micros": "60000000", "file_system_poll_wait_seconds": "1",
    "flush_filesystem_caches": "true", "tensorflow_session_parallelism": "0",
    "tensorflow_session_config_file": "", "tensorflow_intra_op_parallelism": "0",
    "tensorflow_inter_op_parallelism": "0", "use_alts_credentials": "false", "ssl_config_file": "",
    "platform_config_file": "", "per_process_gpu_memory_fraction": "0", "saved_model_tags": "serve",
    "grpc_channel_arguments": "", "grpc_max_threads": "0", "enable_model_warmup": "true",
    "num_request_iterations_for_warmup": "0", "version": None, "monitoring_config_file": None,
    "remove_unused_fields_from_bundle_metagraph": "true", "prefer_tflite_model": "false",
    "num_tflite_pools": "4", "num_tflite_interpreters_per_pool": "1",
    "enable_signature_method_name_check": "false", "xla_cpu_compilation_enabled": "false",
    "xla_gpu_compilation_enabled": "false", "enable_profiler": "true", "mixed_precision": "",
    "thread_pool_factory_config_file": "", "skip_initialize_tpu": "false",
    "enable_grpc_healthcheck_service": "false", "enable_serialization_as_tensor_content": "false",
    "allowed_batch_sizes": None,
}  # fmt: skip


def test_every_tf_serving_flag_is_taken_at_its_default() -> None:
    given = [f"--{name}={value}" for name, value in TF_SERVING_FLAGS.items() if value is not None]
    settings = parse_flags(given)
    assert settings.port == 8500 and settings.grpc_channel_arguments == () and settings.warmup_iterations == 1


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--ssl_config_file=/etc/ssl.config", "--ssl_config_file=/etc/ssl.config is not supported"),
        ("--saved_model_tags=serve,gpu", "the MetaGraph tagged serve is the one served"),
        ("--enable_signature_method_name_check", "not their method_name"),
        ("--mixed_precision=bfloat16", "--mixed_precision=bfloat16 is not supported"),
        ("--port=0", "--port=0 serves no gRPC"),  # server.cc:183-188
        ("--model_base_pat=/tmp", "unrecognized arguments: --model_base_pat=/tmp"),  # no abbreviations
        ("--grpc_channel_arguments=grpc.max_concurrent_streams", "expected KEY=VALUE"),
        # int32 flags in TF Serving (main.cc:138,173), which does not start on a fraction
        ("--file_system_poll_wait_seconds=0.5", "invalid int value: '0.5'"),
        ("--model_config_file_poll_wait_seconds=0.5", "invalid int value: '0.5'"),
    ],
)
def test_tf_serving_flags_this_server_cannot_honour_are_refused_in_one_line(flag: str, message: str) -> None:
    result = run_server_cli("--model_base_path=/tmp", flag)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_flags_that_tune_what_this_server_lacks_are_taken_and_change_nothing() -> None:
    plain = parse_flags(["--model_base_path=/tmp"])
    tuned = parse_flags(
        [
            "--model_base_path=/tmp",
            "--rest_api_num_threads=4",
            "--num_load_threads=2",
            "--flush_filesystem_caches=false",
            "--enable_profiler=false",
            "--xla_cpu_compilation_enabled",
            "--per_process_gpu_memory_fraction=0.5",
            "--grpc_max_threads=8",
        ]
    )
    assert tuned == plain


def test_grpc_channel_arguments_are_read_as_tf_serving_reads_them() -> None:
    """server.cc:100-112,398-410: KEY=VALUE pairs; a value that is an int32 goes to gRPC as an int."""
    settings = parse_flags(
        [
            "--model_base_path=/tmp",
            "--grpc_channel_arguments=grpc.max_concurrent_streams=100,grpc.primary_user_agent=x=y,"
            "grpc.max_connection_age_ms=3000000000",
        ]
    )
    assert settings.grpc_channel_arguments == (
        ("grpc.max_concurrent_streams", 100),
        ("grpc.primary_user_agent", "x"),  # the second part, as TF Serving's Split(..., "=")[1]
        ("grpc.max_connection_age_ms", "3000000000"),  # past int32: a string, as in TF Serving
    )
    assert settings.limits.grpc_connections == 4096  # ours by default, gRPC's own cap
    assert settings.limits.grpc_streams == 100  # given: the operator's value wins over ours (1,000)
    capped = parse_flags(
        ["--model_base_path=/tmp", "--grpc_channel_arguments=grpc.max_allowed_incoming_connections=10"]
    )
    assert capped.limits.grpc_connections == 10
    assert (capped.limits.grpc_pending_calls, capped.limits.grpc_pending_calls_limit) == (10_000, 20_000)


def test_a_config_file_wins_over_a_base_path_as_in_tf_serving(tmp_path: Path) -> None:
    """server.cc:212-218: --model_base_path is ignored when --model_config_file is given."""
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "a" base_path: "/models/a" model_platform: "tensorflow" } }'
    )
    settings = parse_flags([f"--model_config_file={config}", "--model_base_path=/tmp/other"])
    assert [m.name for m in settings.models.model_config_list.config] == ["a"]


def test_help_uses_tensorflow_model_server_flags() -> None:
    result = run_server_cli("--help")
    for flag in (
        "--port",
        "--rest_api_port",
        "--model_config_file",
        "--file_system_poll_wait_seconds",
        "--enable_batching",
        "--batching_parameters_file",
        "--monitoring_config_file",
        "--rest_api_timeout_in_ms",
        "examples:",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ((), "nothing to serve"),
        (("--model_config_file=/nonexistent.config",), "cannot read /nonexistent.config"),
        (
            ("--model_base_path=/tmp", "--enable_batching", "--batching_parameters_file=BAD"),
            "cannot read BAD",
        ),
        (("--port=abc",), "python -m serving: error: argument --port: invalid int value: 'abc' (see python"),
        (("--no_such_flag=1",), "unrecognized arguments: --no_such_flag=1"),
        (
            ("--model_base_path=/tmp", "--max_filled_tensor_bytes=0"),
            "--max_filled_tensor_bytes must be positive, got 0",
        ),
    ],
)
def test_bad_configuration_is_one_line(flags: tuple[str, ...], message: str) -> None:
    result = run_server_cli(*flags)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_text_proto_names_file_and_place(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "x" base_path: "/tmp" }')
    result = run_server_cli(f"--model_config_file={config}")
    assert (
        result.returncode == 2
        and f"{config} is not a valid ModelServerConfig text proto: 1:" in result.stderr
    )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ('name: "m" base_path: "/models/m"', "Illegal setting neither ModelServerConfig::model_type"),
        (
            'name: "m" base_path: "/models/m" model_type: TENSORFLOW model_platform: "tensorflow"',
            "Illegal setting both ModelServerConfig::model_type",
        ),
        (
            'name: "m" base_path: "/models/m" model_type: OTHER',
            "ModelServerConfig::model_type choice 2 not supported.",
        ),
        (
            'name: "m" base_path: "models/m" model_platform: "tensorflow"',
            "Expected model m to have an absolute path or URI; got base_path()=models/m",
        ),
        (
            'name: "m" model_platform: "tensorflow"',
            "Expected model m to have an absolute path or URI; got base_path()=",
        ),
        (
            'name: "m" base_path: "/models/m" model_platform: "pytorch"',
            "Model m requests unsupported platform pytorch",
        ),
        (
            'name: "m" base_path: "/a" model_platform: "tensorflow" } config { name: "m" base_path: "/b"',
            "Illegal to list model m multiple times in config list",
        ),
    ],
    ids=[
        "no-platform",
        "two-platforms",
        "a-model-type-not-tensorflow",
        "relative-base-path",
        "no-base-path",
        "other-platform",
        "a-name-twice",
    ],
)
def test_a_config_file_tf_serving_refuses_is_refused(tmp_path: Path, model: str, message: str) -> None:
    """What TF Serving's ServerCore refuses in a config (server_core.cc:77-105,117-147,662-666), ours
    refuses too, in its words, so that a file tried on ours does not stop the real image; the
    deprecated model_type: TENSORFLOW is read as the platform."""
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ config {{ {model} }} }}")
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_model_config(config)
    config.write_text(
        'model_config_list { config { name: "m" base_path: "/models/m" model_type: TENSORFLOW } }'
    )
    assert read_model_config(config).model_config_list.config[0].name == "m"


def test_a_reload_may_not_change_a_models_platform() -> None:
    """Checked after the base paths and before the platforms are looked up (server_core.cc:155-181,
    506-511), so a reload that moves a model to another platform is told that, not that the platform
    is unsupported."""
    old, new = (model_server_config_pb2.ModelServerConfig() for _ in range(2))
    old.model_config_list.config.add(name="m", base_path="/m", model_platform="tensorflow")
    new.model_config_list.config.add(name="m", base_path="/m", model_platform="tflite")
    message = (
        "Illegal to change a model's platform. For model m platform was tensorflow and new platform "
        "requested is tflite"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_model_config(new, old)
    with pytest.raises(ConfigError, match="Model m requests unsupported platform tflite"):
        check_model_config(new)


def test_a_config_file_that_is_not_text_is_one_line_too(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 (a binary file, or one caught half-written) are a ConfigError like any
    other bad file: at start one line, and for the watcher a logged error with the last config kept
    (a UnicodeDecodeError ended the watcher's thread, silently)."""
    config = tmp_path / "models.config"
    config.write_bytes(b'model_config_list { config { name: "\xff" } }')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_model_config(config)
    result = run_server_cli(f"--model_config_file={config}")
    assert result.returncode == 2 and f"{config} is not UTF-8 text" in result.stderr


@pytest.mark.parametrize("flag", ["--rest_api_port", "--port"])
def test_port_in_use_is_one_line(trained_model_dir: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server_cli(
            f"--port={free_port()}",
            "--host=127.0.0.1",
            f"{flag}={port}",
            f"--model_base_path={trained_model_dir / 'mnist'}",
        )
    assert (
        result.returncode == 1 and "cannot start the server" in result.stderr and str(port) in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_ports_open_before_any_version_exists(tmp_path: Path) -> None:
    server = start_server("--model_name=mnist", f"--model_base_path={tmp_path}", wait_available=None)
    try:

        def answers() -> bool:
            try:
                return requests.get(f"{server.rest_url}/v1/models/mnist", timeout=1).status_code == 404
            except requests.ConnectionError:
                return False

        wait_for(lambda: answers() or server.process.poll() is not None, 60, "the REST port to answer")
        reply = requests.get(f"{server.rest_url}/v1/models/mnist", timeout=5).json()
        assert reply == {"error": "Could not find any versions of model mnist"}
    finally:
        assert server.stop() == 0


def test_a_reload_call_cannot_point_outside_the_allowed_roots_and_the_watched_file_wins_again(
    two_versions: Path, tmp_path: Path, images: np.ndarray
) -> None:
    """ModelService reloads come from anyone who reaches the port: a base path of /etc or /proc, or
    anywhere no root allows, is PERMISSION_DENIED; an empty config unloads mnist, and the watched file
    (re-applied at each poll, as TF Serving does) brings it back."""
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "mnist" base_path: "{two_versions}"'
        ' model_platform: "tensorflow" } }\n'
    )
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(two_versions, elsewhere / "mnist")
    server = start_server(
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        f"--allowed_base_path_roots={elsewhere}",
    )

    def reload(*base_paths: str) -> grpc.StatusCode:
        new = model_server_config_pb2.ModelServerConfig()
        new.model_config_list.SetInParent()
        for base_path in base_paths:
            new.model_config_list.config.add(name="mnist", base_path=base_path, model_platform="tensorflow")
        with grpc.insecure_channel(server.grpc_target) as channel:
            try:
                model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(config=new), timeout=30
                )
            except grpc.RpcError as err:
                return err.code()
        return grpc.StatusCode.OK

    try:
        for outside in ("/etc", "/proc/self", f"{two_versions}/../../..", str(tmp_path)):
            assert reload(outside) == grpc.StatusCode.PERMISSION_DENIED, outside
        assert server.model_states() == {2: "AVAILABLE"}  # nothing changed
        assert reload(str(elsewhere / "mnist")) == grpc.StatusCode.OK  # under the flag's root
        assert reload() == grpc.StatusCode.OK  # an empty list: mnist is gone...
        wait_for(lambda: server.model_states() == {2: "AVAILABLE"}, 30, "the watched file to win again")
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(predict_request(images[:1]), timeout=10).model_spec.version.value == 2
    finally:
        assert server.stop() == 0


def test_the_open_file_limit_is_raised_so_the_connection_cap_is_what_clients_meet() -> None:
    """A soft limit of 1,024 (a shell's usual) is raised to the hard limit; where the hard limit itself
    is below --rest_api_max_connections, the server says so at start."""
    code = (
        "import logging, resource, sys; logging.basicConfig(stream=sys.stdout, format='%(message)s');"
        "from serving.__main__ import _allow_open_files;"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE);"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard));"
        "_allow_open_files(int(sys.argv[1]));"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard)"
    )
    for connections, warned in ((16, False), (10**9, True)):
        command = [sys.executable, "-c", code, str(connections)]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.stdout.splitlines()[-1] == "True", result.stdout + result.stderr
        assert ("the open-file limit" in result.stdout) == warned, result.stdout
