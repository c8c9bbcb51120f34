"""Warm-up: a version's `assets.extra/tf_serving_warmup_requests` replayed before it serves, as TF
Serving replays it (servables/tensorflow/saved_model_warmup_util.cc:77-240, saved_model_warmup.cc:39-78).

The file is TFRecords of PredictionLog. Each record's request runs through the same checks and result
building as a request from a client (serving/runs.py), on the loading thread; a failing record fails the
load, so a version whose own warm-up requests it cannot answer never serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf.message import DecodeError

from serving import runs, tfrecord
from serving.errors import ServingError, invalid_argument
from serving.limits import Limits
from tfs_api.tensorflow_serving.apis import prediction_log_pb2

if TYPE_CHECKING:
    from serving.servable import Servable

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's own cap (saved_model_warmup_util.h:33)
# The model's owner wrote the file: only TensorFlow's own bound, on any tensor, filled or not.
WARMUP_LIMITS = Limits(tensor_bytes=1 << 31, filled_tensor_bytes=1 << 31)


# Hears of a warm-up that read its file to the end or met a damaged record: the version's path, the
# seconds it took, the records read, and TF Serving's status text ("OK", or "DATA_LOSS: ...").
WarmupObserver = Callable[[Path, float, int, str], None]


def replay(servable: Servable, iterations: int = 1, observe: WarmupObserver = lambda *_: None) -> int:
    """Replay the file, each record `iterations` times (--num_request_iterations_for_warmup): a missing
    file is no warm-up, a record with no request in it is skipped but counted, and a file of more than
    MAX_WARMUP_RECORDS records fails the load once the record past the limit has run. Returns the
    number of records. `observe` hears of it as TF Serving's warm-up metrics do (:209-214): when the
    file was read to its end or a record of it was damaged, not when a record failed or was past the
    limit, which TF Serving returns before it counts."""
    path = servable.path / WARMUP_FILE
    if not path.is_file():
        return 0
    started = time.monotonic()
    count = 0
    try:
        for raw in tfrecord.records(path):
            try:
                log = prediction_log_pb2.PredictionLog.FromString(raw)
            except DecodeError:  # saved_model_warmup_util.cc:117-120
                raise invalid_argument(f"Failed to parse warmup record {count} from {path}") from None
            for _ in range(iterations):
                try:
                    _run_record(servable, log)
                except ServingError as err:
                    raise ServingError(
                        err.code, f"warm-up request {count} of {path} failed: {err.message}"
                    ) from None
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise invalid_argument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
    except tfrecord.RecordError as err:  # TensorFlow's reader: DATA_LOSS (:231-234)
        observe(servable.path, time.monotonic() - started, count, f"DATA_LOSS: {err}")
        raise ServingError(
            grpc.StatusCode.DATA_LOSS, f"{err}. Please verify your warmup data is in TFRecord format."
        ) from None
    observe(servable.path, time.monotonic() - started, count, "OK")
    return count


def _run_record(servable: Servable, log: prediction_log_pb2.PredictionLog) -> None:
    """One record's request, by its kind (saved_model_warmup.cc:43-77): its answer is built, so that
    the checks on what the model gives back run too, and thrown away."""
    kind = log.WhichOneof("log_type")
    if kind is None:  # no request in it: skipped (:74-75)
        return
    if kind == "predict_log":
        run = runs.predict_run(servable, log.predict_log.request, WARMUP_LIMITS)
        servable.predict_now(run.signature_name, run.inputs, run.outputs)
    elif kind in ("classify_log", "regress_log"):  # checked as a one-task MultiInference's result is
        request = log.classify_log.request if kind == "classify_log" else log.regress_log.request
        classifies = kind == "classify_log"
        run = runs.examples_run(servable, request.model_spec.signature_name, request.input, classifies)
        outputs = servable.predict_now(run.signature_name, run.inputs, run.outputs)
        runs.task_result(runs.Task(request.model_spec, run, classifies), outputs, servable.version)
    elif kind == "multi_inference_log":
        for task in runs.multi_inference_tasks(servable, log.multi_inference_log.request):
            outputs = servable.predict_now(task.run.signature_name, task.run.inputs, task.run.outputs)
            runs.task_result(task, outputs, servable.version)
    else:  # predict_streamed_log, session_run_log: TF Serving names the oneof's field number (:68-73)
        number = prediction_log_pb2.PredictionLog.DESCRIPTOR.fields_by_name[kind].number
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")
