"""TF Serving's gRPC API (tensorflow-serving-api's generated modules), loaded without TensorFlow.

The generated modules import TensorFlow's own message definitions (tensorflow/core/framework/
tensor_pb2.py and a dozen more), and importing anything under `tensorflow` first runs TensorFlow's
package __init__: about 5 s and a whole core on a 2-core machine, spent loading all of TensorFlow to
build a few message classes. A client that only sends tensors needs those files and nothing else of
TensorFlow, so when TensorFlow is not loaded already, they are imported under a stand-in `tensorflow`
package that only points at TensorFlow's folder (0.14 s). The stand-in and the modules imported
through it leave sys.modules afterwards: a later `import tensorflow` in the same process loads the
real package, whose protos register the same descriptors again, which protobuf accepts, and give the
same message classes.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
import types

MODULES = {
    "predict_pb2": "tensorflow_serving.apis.predict_pb2",
    "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
    "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
    "prediction_service_pb2_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
    "model_service_pb2_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
    "types_pb2": "tensorflow.core.framework.types_pb2",
    "error_codes_pb2": "tensorflow.core.protobuf.error_codes_pb2",
}
_loading = threading.Lock()


def _import_modules() -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: importlib.import_module(m) for name, m in MODULES.items()})


@functools.cache
def _load() -> types.SimpleNamespace:
    if "tensorflow" in sys.modules:  # the real one is loaded: nothing to save
        return _import_modules()
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tensorflow is not installed: its protos are part of TF Serving's API")
    stand_in = types.ModuleType("tensorflow")
    stand_in.__path__ = list(spec.submodule_search_locations)
    stand_in.__spec__ = spec
    sys.modules["tensorflow"] = stand_in
    try:
        return _import_modules()
    finally:
        for name in [n for n in sys.modules if n == "tensorflow" or n.startswith("tensorflow.")]:
            del sys.modules[name]


def serving_api() -> types.SimpleNamespace:
    """The modules named in MODULES, as attributes: `serving_api().predict_pb2.PredictRequest()`."""
    with _loading:  # one thread loads; the others wait for its modules
        return _load()
