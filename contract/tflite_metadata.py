"""Whether a version's model.tflite carries its signatures, read from the file's metadata names alone.

Apart from model_dir because it needs LiteRT's flatbuffer schema, which the trainer's and `make up`'s
environments have and the dashboard's and client's do not.
"""

from __future__ import annotations

from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

from contract.model_dir import TFLITE_FILE, TFLITE_SIGNATURES


def predates_tflite_signatures(version: Path) -> bool:
    """A version whose model.tflite has no TFLITE_SIGNATURES entry (exported before the trainer wrote
    one): TF Serving's --prefer_tflite_model would serve a made-up signature and fail its warm-up."""
    tflite = version / TFLITE_FILE
    if not tflite.is_file():
        return False
    try:
        model = schema.Model.GetRootAs(tflite.read_bytes(), 0)
        names = {model.Metadata(i).Name() for i in range(model.MetadataLength())}
    except Exception:  # not a flatbuffer TF Serving could read either
        return True
    return TFLITE_SIGNATURES.encode() not in names
