"""The floor of bench/peers.py's gRPC cells: grpc.aio on uvloop, as our server runs it, answering
Predict with a fixed reply and doing nothing else (no parsing, no model). What it costs a request is
what Python's gRPC costs before our server does any work.

    .venv/bin/python bench/grpc_floor.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import uvloop

from tfs_api.tensorflow_serving.apis import predict_pb2

REPLY = predict_pb2.PredictResponse().SerializeToString()


async def predict(request: bytes, context: Any) -> bytes:
    return REPLY


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(predict)  # bytes in, bytes out: nothing parsed
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
