"""A TensorFlow-Serving-compatible model server: `tensorflow_model_server`'s flags, gRPC and REST.

python -m serving --port=8500 --rest_api_port=8501 --model_name=mnist --model_base_path=models/mnist
python -m serving --rest_api_port=8501 --model_config_file=serving/config/models.config \
    --base_path_map=/models=models
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

import uvloop

from serving import tensorflow_runtime
from serving.config_files import ConfigError
from serving.settings import parse_flags

if TYPE_CHECKING:
    from serving.server import ModelServer


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


async def _serve_until_signalled(server: ModelServer) -> None:
    """Serve until SIGINT or SIGTERM, then stop gracefully (see ModelServer.serve)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await server.serve(stop)


if __name__ == "__main__":
    sys.exit(main())
