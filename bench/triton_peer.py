"""Triton's side of bench/peers.py, run in .venv-peers (tritonclient wants numpy 1, our platform numpy 2).

.venv-peers/bin/python bench/triton_peer.py payloads IMAGE.npy OUT_DIR
    writes OUT_DIR/rest.json (KServe v2 JSON) and OUT_DIR/grpc.bin (a serialized ModelInferRequest)
.venv-peers/bin/python bench/triton_peer.py answers IMAGE.npy GRPC_TARGET HTTP_URL
    prints {"grpc": probabilities, "rest": probabilities} as Triton's own clients read them
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

MODEL = "mnist"


def payloads(image: np.ndarray, out: Path) -> None:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="images", datatype="FP32")
    tensor.shape.extend(image.shape)
    request.raw_input_contents.append(image.astype("<f4").tobytes())
    (out / "grpc.bin").write_bytes(request.SerializeToString())
    body = {
        "inputs": [
            {"name": "images", "shape": list(image.shape), "datatype": "FP32", "data": image.ravel().tolist()}
        ]
    }
    (out / "rest.json").write_text(json.dumps(body))


def answers(image: np.ndarray, grpc_target: str, http_url: str) -> dict[str, list[float]]:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    found = {}
    for name, module, url in (("grpc", triton_grpc, grpc_target), ("rest", triton_http, http_url)):
        client = module.InferenceServerClient(url)
        tensor = module.InferInput("images", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        found[name] = client.infer(MODEL, [tensor]).as_numpy("probabilities")[0].tolist()
    return found


def main() -> None:
    command, image_file, *rest = sys.argv[1:]
    image = np.load(image_file)
    if command == "payloads":
        payloads(image, Path(rest[0]))
    else:
        print(json.dumps(answers(image, *rest)))


if __name__ == "__main__":
    main()
