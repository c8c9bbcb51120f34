"""A TensorFlow-Serving-compatible model server: serves any SavedModel by its SignatureDefs."""

import os

# gRPC's C core logs to stderr on its own (a failed bind, for one) before any Python handler can speak;
# the server reports those errors itself, in one line. GRPC_VERBOSITY=debug brings them back.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

DEFAULT_SIGNATURE = "serving_default"  # what a request that names no signature gets, on either door
