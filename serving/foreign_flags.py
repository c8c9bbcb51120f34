"""`tensorflow_model_server` flags that this server takes so that TF Serving's command lines run here
unchanged, though it has nothing of its own for them to set (model_servers/main.cc, the pinned
release): those that tune what this server does not have are accepted and change nothing; those whose
meaning it cannot give are accepted only at TF Serving's default, and refused otherwise, in one line
that says why. The ledger (docs/tf-serving-compat.md, section 2) cites each.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cliargs import boolean
from serving.config_files import ConfigError


@dataclass(frozen=True)
class ForeignFlag:
    name: str
    kind: Callable[[str], Any]
    default: Any  # TF Serving's (model_servers/server.h)
    why: str  # why it changes nothing here, or why only its default can be served


NO_EFFECT = (
    ForeignFlag("grpc_max_threads", int, 0, "gRPC calls share one event loop, not threads"),
    ForeignFlag("rest_api_num_threads", int, 0, "REST is answered on one event loop"),
    ForeignFlag("num_load_threads", int, 0, "versions load on the poller's thread"),
    ForeignFlag("num_unload_threads", int, 0, "versions unload on the poller's thread"),
    ForeignFlag("flush_filesystem_caches", boolean, True, "no file-system cache is kept"),
    ForeignFlag("per_process_gpu_memory_fraction", float, 0.0, "no GPU is used"),
    ForeignFlag("xla_cpu_compilation_enabled", boolean, False, "XLA is not used"),
    ForeignFlag("xla_gpu_compilation_enabled", boolean, False, "XLA is not used"),
    ForeignFlag("skip_initialize_tpu", boolean, False, "no TPU is used"),
    ForeignFlag("tensorflow_session_parallelism", int, 0, "deprecated in TF Serving too"),
    ForeignFlag("enable_profiler", boolean, True, "no profiler service is offered"),
    ForeignFlag(
        "remove_unused_fields_from_bundle_metagraph",
        boolean,
        True,
        "only the signatures of a version are kept in memory",
    ),
)
ONLY_DEFAULT = (
    ForeignFlag("ssl_config_file", str, "", "gRPC is served without TLS: terminate TLS at the balancer"),
    ForeignFlag("use_alts_credentials", boolean, False, "gRPC is served without ALTS"),
    ForeignFlag("platform_config_file", str, "", "models are read from --model_config_file"),
    ForeignFlag("saved_model_tags", str, "serve", "the MetaGraph tagged serve is the one served"),
    ForeignFlag("tensorflow_session_config_file", str, "", "sessions take only the parallelism flags"),
    ForeignFlag("thread_pool_factory_config_file", str, "", "model calls run on the server's own pool"),
    ForeignFlag(
        "enable_per_model_batching_parameters",
        boolean,
        False,
        "batching is set for all models by --batching_parameters_file",
    ),
    ForeignFlag("mixed_precision", str, "", "models run at the precision they were saved in"),
    ForeignFlag(
        "enable_signature_method_name_check",
        boolean,
        False,
        "signatures are checked by their inputs and outputs, not their method_name",
    ),
)


def add_to(parser: argparse.ArgumentParser) -> None:
    """The flags, in a group of their own in --help."""
    group = parser.add_argument_group(
        "TF Serving flags taken for compatibility",
        "accepted so that tensorflow_model_server command lines run unchanged",
    )
    for flag in (*NO_EFFECT, *ONLY_DEFAULT):
        flag_is_bool = flag.kind is boolean
        group.add_argument(
            f"--{flag.name}",
            type=flag.kind,
            default=flag.default,
            nargs="?" if flag_is_bool else None,
            const=True if flag_is_bool else None,
            help=f"no effect here: {flag.why}" if flag in NO_EFFECT else f"only {_shown(flag)}: {flag.why}",
        )


def _shown(flag: ForeignFlag) -> str:
    """TF Serving's default, as a command line would give it."""
    if flag.default == "":
        return "unset"
    return str(flag.default).lower() if flag.kind is boolean else str(flag.default)


def check(args: argparse.Namespace) -> None:
    """Refuse a flag set to what this server cannot do."""
    for flag in ONLY_DEFAULT:
        value = getattr(args, flag.name)
        if value != flag.default:
            raise ConfigError(f"--{flag.name}={value} is not supported by this server: {flag.why}")
