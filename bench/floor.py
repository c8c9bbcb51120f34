"""The floor of bench/peers.py: our server's two front doors, as it runs them (grpc.aio and uvicorn with
httptools, on one uvloop), answering Predict with a fixed reply and doing nothing else: no parsing, no
model. What this costs a request is what the Python libraries cost before our server does any work.

    .venv/bin/python bench/floor.py GRPC_PORT REST_PORT
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import uvicorn
import uvloop

from tfs_api.tensorflow_serving.apis import predict_pb2

GRPC_REPLY = predict_pb2.PredictResponse().SerializeToString()
REST_REPLY = b'{"predictions": []}'


async def predict(request: bytes, context: Any) -> bytes:
    return GRPC_REPLY


async def rest_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the body whole, as our server does, then answers."""
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": REST_REPLY})


async def serve(grpc_port: int, rest_port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(predict)  # bytes in, bytes out: nothing parsed
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    config = uvicorn.Config(
        rest_app, host="127.0.0.1", port=rest_port, loop="none", http="httptools", lifespan="off",
        access_log=False, log_config=None, server_header=False, date_header=False, proxy_headers=False,
    )  # fmt: skip
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
