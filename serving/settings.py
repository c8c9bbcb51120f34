"""The server's settings, from `tensorflow_model_server`'s own flag names and TF Serving's text protos.

Swapping TF Serving for this server (or back) changes only the program in a command line; every flag
below means what it means to `tensorflow_model_server`, and every config file is parsed with protobuf's
text_format as TF Serving parses it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from cliargs import OneLineParser, boolean
from contract.model_dir import simple_atoi
from serving import foreign_flags
from serving.batching import BatchPolicy
from serving.config_files import ConfigError, read_model_config, read_text_proto, single_model_config
from serving.limits import GRPC_CAPS, Limits
from serving.tflite import TflitePolicy, schedulable_cores
from tfs_api.batching_pb2 import BatchingParameters
from tfs_api.monitoring_pb2 import MonitoringConfig
from tfs_api.tensorflow_serving.config import model_server_config_pb2

SERVES = "TensorFlow Serving 2.20.0's gRPC and REST APIs, flags and config files"
EXAMPLES = """examples:
  python -m serving --port=8500 --rest_api_port=8501 --model_name=mnist --model_base_path=models/mnist
  python -m serving --rest_api_port=8501 --model_config_file=serving/config/models.config \\
      --base_path_map=/models=models --monitoring_config_file=serving/config/monitoring.config
  python -m serving --model_name=mnist --model_base_path=models/mnist --enable_batching \\
      --batching_parameters_file=serving/config/batching.config
"""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    rest_api_port: int
    grpc_socket_path: str  # "": none
    grpc_channel_arguments: tuple[tuple[str, int | str], ...]
    models: model_server_config_pb2.ModelServerConfig
    model_config_file: Path | None
    model_config_file_poll_wait_seconds: int  # 0: read the file once, at start
    base_path_map: tuple[str, str] | None  # (container prefix, host prefix), see map_base_paths
    allowed_base_path_roots: tuple[str, ...]  # ours: where a reload call may point base paths
    allow_version_labels_for_unavailable_models: bool
    file_system_poll_wait_seconds: int
    batching: BatchPolicy | None  # from BatchingParameters, when --enable_batching
    tflite: TflitePolicy | None  # when --prefer_tflite_model
    monitoring: MonitoringConfig
    rest_api_timeout_s: float
    rest_api_enable_cors_support: bool
    warmup_iterations: int  # each warm-up record's replays; 0: --enable_model_warmup=false
    max_num_load_retries: int
    load_retry_interval_s: float
    enable_grpc_healthcheck_service: bool
    enable_serialization_as_tensor_content: bool  # Predict's gRPC outputs packed, not value by value
    intra_op_threads: int
    inter_op_threads: int
    lame_duck_s: float  # ours, from SERVING_LAME_DUCK_SECONDS: see ModelServer.stop
    limits: Limits  # ours: what clients may make the server hold
    verbose: bool


def _int_argument(arguments: tuple[tuple[str, int | str], ...], key: str, default: int) -> int:
    """A gRPC channel argument's value as given, which must be an int, else `default`."""
    value = dict(arguments).get(key, default)
    if not isinstance(value, int):
        raise ConfigError(f"--grpc_channel_arguments: {key}={value} is not a whole number")
    return value


def _version() -> str:
    try:
        return version("mnist-platform")
    except PackageNotFoundError:  # run from a checkout that pip has not installed
        return "(not installed)"


def grpc_channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """KEY=VALUE,KEY=VALUE as TF Serving reads --grpc_channel_arguments (server.cc:100-112,398-410):
    a value that is an int32 goes to gRPC as an int, any other as a string."""
    arguments: list[tuple[str, int | str]] = []
    for item in text.split(",") if text else ():
        parts = item.split("=")  # KEY=A=B is KEY=A to TF Serving, which takes the second part
        if len(parts) < 2 or not parts[0]:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE,..., got {item!r} in {text!r}")
        key, value = parts[0], parts[1]
        number = simple_atoi(value, 32)
        arguments.append((key, value if number is None else number))
    return tuple(arguments)


def parse_base_path_map(text: str) -> tuple[str, str]:
    container, sep, host = text.partition("=")
    if not sep or not container.startswith("/") or not host:
        raise argparse.ArgumentTypeError(f"expected CONTAINER=HOST, e.g. /models=models, got {text!r}")
    return container.rstrip("/"), str(Path(host).resolve())


def lame_duck_seconds() -> float:
    """SERVING_LAME_DUCK_SECONDS from the environment (ours, not a tensorflow_model_server flag, so that
    docker-compose.yml can give it to both servers alike: TF Serving ignores it); 0 when unset."""
    text = os.environ.get("SERVING_LAME_DUCK_SECONDS", "0")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 60:
        raise ConfigError(f"SERVING_LAME_DUCK_SECONDS={text!r}: expected seconds from 0 to 60")
    return seconds


def parse_flags(argv: list[str] | None = None) -> Settings:
    parser = OneLineParser(
        prog="python -m serving",
        description="A TensorFlow-Serving-compatible model server (gRPC and REST) for SavedModels.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # TensorFlow's flags take whole names only
    )
    flag = parser.add_argument
    flag("--port", type=int, default=8500, help="gRPC port (default 8500)")
    flag("--rest_api_port", type=int, default=0, help="REST port; 0 (the default) serves no REST")
    flag("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0, as TF Serving)")
    flag("--model_name", default="default", help="the model's name, with --model_base_path")
    flag("--model_base_path", default="", help="directory holding the model's numbered versions")
    flag("--model_config_file", type=Path, help="ModelServerConfig text proto (instead of the two above)")
    flag(
        "--model_config_file_poll_wait_seconds",
        type=int,  # int32 in TF Serving (main.cc:138), which refuses 0.5 and does not start
        default=0,
        help="seconds between re-reads of --model_config_file (labels, policies); 0 (the default) never",
    )
    flag(
        "--allow_version_labels_for_unavailable_models",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="let a new label name a version that is not AVAILABLE yet (e.g. labels in the first config)",
    )
    flag(
        "--base_path_map",
        type=parse_base_path_map,
        metavar="CONTAINER=HOST",
        help="read base paths under CONTAINER from HOST, as a Docker volume mount would "
        "(not a tensorflow_model_server flag; e.g. /models=models)",
    )
    flag(
        "--allowed_base_path_roots",
        default="",
        metavar="DIR[,DIR...]",
        help="ours: directories a ModelService reload call may name base paths under, besides the "
        "base paths the server started with (default: those alone)",
    )
    flag(
        "--file_system_poll_wait_seconds",
        type=int,  # int32 in TF Serving (main.cc:173)
        default=1,
        help="seconds between polls for new versions; 0 polls once, < 0 never (default 1)",
    )
    flag(
        "--enable_batching",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="merge concurrent requests into one model call",
    )
    flag("--batching_parameters_file", type=Path, help="BatchingParameters text proto")
    flag("--monitoring_config_file", type=Path, help="MonitoringConfig text proto (Prometheus endpoint)")
    flag("--rest_api_timeout_in_ms", type=int, default=30000, help="REST request timeout (default 30000)")
    flag(
        "--rest_api_enable_cors_support",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="CORS headers on every /v1/ answer, so web pages elsewhere may call the API (default false)",
    )
    flag(
        "--enable_model_warmup",
        type=boolean,
        nargs="?",
        const=True,
        default=True,
        help="replay assets.extra/tf_serving_warmup_requests before a version serves (default true)",
    )
    flag(
        "--num_request_iterations_for_warmup",
        type=int,
        default=0,
        help="times each warm-up request is replayed; used only if > 0, else once (default 0)",
    )
    flag(
        "--max_num_load_retries",
        type=int,
        default=5,
        help="retries of a version's failed load before it is given up (END); default 5, as TF Serving",
    )
    flag(
        "--load_retry_interval_micros",
        type=int,
        default=60_000_000,
        help="microseconds between those retries (default 60000000, a minute, as TF Serving)",
    )
    flag(
        "--enable_grpc_healthcheck_service",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="serve grpc.health.v1, SERVING once a model is AVAILABLE",
    )
    flag(
        "--enable_serialization_as_tensor_content",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="write Predict's gRPC outputs as packed tensor_content, not in float_val etc. (default false)",
    )
    flag(
        "--prefer_tflite_model",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="run a version's model.tflite with LiteRT when it has one, else its SavedModel",
    )
    flag(
        "--num_tflite_pools",
        type=int,
        default=schedulable_cores(),
        help="single-threaded LiteRT interpreters per version: calls that run at once (default: the cores)",
    )
    flag(
        "--num_tflite_interpreters_per_pool",
        type=int,
        default=1,
        help="above 1: merge calls waiting for an interpreter, as TF Serving's session does (default 1)",
    )
    flag("--tensorflow_intra_op_parallelism", type=int, default=0, help="0: one thread per core")
    flag("--tensorflow_inter_op_parallelism", type=int, default=0, help="0: one (fits small CPUs)")
    flag(
        "--grpc_channel_arguments",
        type=grpc_channel_arguments,
        default=(),
        help="gRPC server arguments, as TF Serving takes them: KEY=VALUE,... "
        "(e.g. grpc.max_concurrent_streams=100); a value that is an int32 is passed as one",
    )
    flag("--grpc_socket_path", default="", help="also serve gRPC on this UNIX socket (default: none)")
    defaults = Limits()
    flag(
        "--max_request_bytes_in_flight",
        type=int,
        default=defaults.request_bytes,
        help="ours: request bytes held at once over gRPC and REST, compressed requests as they inflate; "
        "past it 429 / RESOURCE_EXHAUSTED; requests over 1 MiB leave an eighth of it to smaller ones "
        f"(default {defaults.request_bytes})",
    )
    flag(
        "--max_tensor_bytes",
        type=int,
        default=defaults.tensor_bytes,
        help=f"ours: the largest request tensor, as its shape claims (default {defaults.tensor_bytes})",
    )
    flag(
        "--max_filled_tensor_bytes",
        type=int,
        default=defaults.filled_tensor_bytes,
        help="ours: the largest request tensor sent with fewer values than its shape holds, which "
        f"repeats the last (default {defaults.filled_tensor_bytes})",
    )
    flag(
        "--max_queued_model_calls",
        type=int,
        default=defaults.queued_calls,
        help=f"ours: model calls queued or running; past it 503 (default {defaults.queued_calls})",
    )
    flag(
        "--rest_api_max_header_bytes",
        type=int,
        default=defaults.rest_header_bytes,
        help=f"ours: a REST request's line and headers; past it 431 (default {defaults.rest_header_bytes})",
    )
    flag(
        "--rest_api_max_connections",
        type=int,
        default=defaults.rest_connections,
        help="ours: open REST connections; one more is answered 503 and closed "
        f"(default {defaults.rest_connections})",
    )
    flag(
        "--rest_api_max_pipelined_requests",
        type=int,
        default=defaults.rest_pipelined,
        help="ours: requests waiting on one REST connection (HTTP pipelining); once that many wait, what "
        "follows is not read and the connection is closed after their answers "
        f"(default {defaults.rest_pipelined})",
    )
    flag(
        "--grpc_request_timeout_in_ms",
        type=int,
        default=int(defaults.grpc_request_s * 1000),
        help="ours: how long a gRPC call may take to send its request message; past it DEADLINE_EXCEEDED "
        f"(default {int(defaults.grpc_request_s * 1000)})",
    )
    flag("--verbose", action="store_true", help="log every load and TensorFlow's own messages")
    flag("--version", action="version", version=f"{parser.prog} {_version()}: {SERVES}")
    foreign_flags.add_to(parser)
    args = parser.parse_args(argv)
    try:
        return _settings(args)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")


def _settings(args: argparse.Namespace) -> Settings:
    foreign_flags.check(args)
    if args.port == 0 and not args.grpc_socket_path:  # server.cc:183-188
        raise ConfigError("--port=0 serves no gRPC: give a port, or --grpc_socket_path")
    if args.model_config_file is not None:  # --model_base_path is then ignored, as TF Serving ignores it
        models = read_model_config(args.model_config_file)
    elif args.model_base_path:
        models = single_model_config(args.model_name, args.model_base_path)
    else:
        raise ConfigError(
            "nothing to serve: give --model_base_path (with --model_name) or --model_config_file"
        )
    batching = None
    if args.batching_parameters_file is not None and not args.enable_batching:
        raise ConfigError("--batching_parameters_file is set without --enable_batching")
    if args.enable_batching:
        parameters = BatchingParameters()
        if args.batching_parameters_file is not None:
            parameters = read_text_proto(
                args.batching_parameters_file, parameters, "--batching_parameters_file"
            )
        try:
            batching = BatchPolicy.from_proto(parameters, os.cpu_count() or 1)
        except ValueError as err:
            raise ConfigError(f"--batching_parameters_file: {err}") from None
    monitoring = MonitoringConfig()
    if args.monitoring_config_file is not None:
        monitoring = read_text_proto(args.monitoring_config_file, monitoring, "--monitoring_config_file")
    for name in ("rest_api_timeout_in_ms", "grpc_request_timeout_in_ms"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(args, name)}")
    for name in ("port", "rest_api_port"):
        if not 0 <= getattr(args, name) <= 65535:
            raise ConfigError(f"--{name}: {getattr(args, name)} is not a port number")
    for name in (
        "max_request_bytes_in_flight",
        "max_tensor_bytes",
        "max_filled_tensor_bytes",
        "max_queued_model_calls",
        "rest_api_max_connections",
        "rest_api_max_pipelined_requests",
    ):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.rest_api_max_header_bytes < 1024:
        raise ConfigError(
            f"--rest_api_max_header_bytes must be at least 1024, got {args.rest_api_max_header_bytes}"
        )
    tflite = None
    if args.prefer_tflite_model:
        tflite = TflitePolicy(args.num_tflite_pools, args.num_tflite_interpreters_per_pool)
    cores = os.cpu_count() or 1
    return Settings(
        host=args.host,
        port=args.port,
        rest_api_port=args.rest_api_port,
        grpc_socket_path=args.grpc_socket_path,
        grpc_channel_arguments=args.grpc_channel_arguments,
        models=models,
        model_config_file=args.model_config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        base_path_map=args.base_path_map,
        allowed_base_path_roots=tuple(root for root in args.allowed_base_path_roots.split(",") if root),
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        batching=batching,
        tflite=tflite,
        monitoring=monitoring,
        rest_api_timeout_s=args.rest_api_timeout_in_ms / 1000,
        rest_api_enable_cors_support=args.rest_api_enable_cors_support,
        warmup_iterations=max(1, args.num_request_iterations_for_warmup) if args.enable_model_warmup else 0,
        max_num_load_retries=max(0, args.max_num_load_retries),
        load_retry_interval_s=max(0, args.load_retry_interval_micros) / 1e6,
        enable_grpc_healthcheck_service=args.enable_grpc_healthcheck_service,
        enable_serialization_as_tensor_content=args.enable_serialization_as_tensor_content,
        intra_op_threads=args.tensorflow_intra_op_parallelism or cores,
        inter_op_threads=args.tensorflow_inter_op_parallelism or 1,
        lame_duck_s=lame_duck_seconds(),
        limits=Limits(
            request_bytes=args.max_request_bytes_in_flight,
            tensor_bytes=args.max_tensor_bytes,
            filled_tensor_bytes=args.max_filled_tensor_bytes,
            queued_calls=args.max_queued_model_calls,
            rest_header_bytes=args.rest_api_max_header_bytes,
            rest_connections=args.rest_api_max_connections,
            rest_pipelined=args.rest_api_max_pipelined_requests,
            grpc_request_s=args.grpc_request_timeout_in_ms / 1000,
            **{
                field: _int_argument(args.grpc_channel_arguments, argument, getattr(Limits(), field))
                for argument, field in GRPC_CAPS.items()
            },
        ),
        verbose=args.verbose,
    )
