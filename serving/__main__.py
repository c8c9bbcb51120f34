"""A TensorFlow-Serving-compatible model server: `tensorflow_model_server`'s flags, gRPC and REST.

python -m serving --port=8500 --rest_api_port=8501 --model_name=mnist --model_base_path=models/mnist
python -m serving --rest_api_port=8501 --model_config_file=serving/config/models.config \
    --base_path_map=/models=models
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import resource
import signal
import sys
from typing import TYPE_CHECKING

import uvloop

from serving import tensorflow_runtime
from serving.config_files import ConfigError
from serving.settings import parse_flags

if TYPE_CHECKING:
    from serving.server import ModelServer

HEADROOM_FILES = 256  # descriptors the server needs besides REST connections: models, gRPC, logs
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
LARGE_BLOCK = 128 << 10  # glibc's own initial threshold


def main(argv: list[str] | None = None) -> int:
    settings = parse_flags(argv)
    logging.basicConfig(
        level=logging.INFO if settings.verbose else logging.WARNING,
        format="serving: %(message)s",
        stream=sys.stderr,
    )
    # TensorFlow loads with the first SavedModel, if one is served: model.tflite files need none.
    tensorflow_runtime.configure(
        tensorflow_runtime.Threads(settings.intra_op_threads, settings.inter_op_threads, settings.verbose)
    )
    rest_connections = settings.limits.rest_connections if settings.rest_api_port else 0
    _allow_open_files(rest_connections + settings.limits.grpc_connections)
    _return_large_blocks()
    from serving.server import ModelServer

    try:
        server = ModelServer(settings)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        uvloop.run(_serve_until_signalled(server))
    except OSError as err:
        print(f"error: cannot start the server: {err}", file=sys.stderr)
        return 1
    return 0


def _allow_open_files(connections: int) -> None:
    """Raise the open-file limit to its hard limit (a shell's soft limit is often 1,024), so that a crowd
    of clients meets the connection caps (--rest_api_max_connections, gRPC's
    grpc.max_allowed_incoming_connections), not a failed accept; say so if even that is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and connections + HEADROOM_FILES > soft:
        logging.getLogger("serving").warning(
            "%d connections may be open (REST's and gRPC's caps): the open-file limit, %d, is reached first",
            connections,
            soft,
        )


def _return_large_blocks() -> None:
    """Large requests' buffers go back to the system when freed. glibc raises its threshold for mapping
    a block of its own (128 KB) to the size of each mapped block freed, up to 32 MB; after a few large
    requests, buffers of up to 32 MB then come from the heap, where requests interleaved leave it
    fragmented and held. A threshold set once stays where it is. Measured with 20 gzip requests
    inflating to 200 MB each, three times, then 12 concurrent 63 MB gRPC requests, twice: the server
    ended at 0.80 GB with it, 1.07 GB without (0.73 GB idle). Nothing to do on other C libraries."""
    path = ctypes.util.find_library("c")
    if path is None:
        return
    libc = ctypes.CDLL(path)
    if hasattr(libc, "mallopt"):
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)


async def _serve_until_signalled(server: ModelServer) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully (see ModelServer.serve)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.serve(stop)


if __name__ == "__main__":
    sys.exit(main())
