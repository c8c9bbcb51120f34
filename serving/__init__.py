"""A TensorFlow-Serving-compatible model server, and (in serving.client) the code that calls one."""

import os

# gRPC's C core logs to stderr on its own (a failed bind, for one) before any Python handler can speak;
# the server reports those errors itself, in one line. GRPC_VERBOSITY=debug brings them back.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
