"""What clients may make the server hold, as the operator set it with flags; the request bytes both doors
share.

TF Serving has none of these limits (its only one is gRPC's message size, which it lifts to 2 GiB):
a server behind a balancer that anyone can reach needs them. Each refusal is immediate and says what
to do, so a client is never left waiting on memory that another client holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from serving.errors import ServingError, invalid_argument

GRPC_CONNECTIONS_ARGUMENT = "grpc.max_allowed_incoming_connections"  # gRPC's own cap on connections
GRPC_STREAMS_ARGUMENT = "grpc.max_concurrent_streams"  # gRPC's own cap on calls at once on a connection


@dataclass(frozen=True)
class Limits:
    # Bytes of request bodies and messages held at once over both doors: JSON and protos take several
    # times their size once read, so this bounds what requests hold together however many arrive.
    request_bytes: int = 256 << 20  # --max_request_bytes_in_flight
    # One request tensor's size as its shape claims it, checked before anything is allocated.
    tensor_bytes: int = 256 << 20  # --max_tensor_bytes
    # Model calls queued or running at once: at a few milliseconds a call, 1024 is a second of work
    # queued; past it a client is better told to retry.
    queued_calls: int = 1024  # --max_queued_model_calls
    # A REST request's line and headers: httptools buffers a header whole before it is handed over.
    rest_header_bytes: int = 64 << 10  # --rest_api_max_header_bytes
    # Open REST connections: each holds a file descriptor, and a client can keep one open with a
    # request every --rest_api_timeout_in_ms.
    rest_connections: int = 4096  # --rest_api_max_connections
    # Open gRPC connections, past which new ones are closed at once: gRPC's own cap, set as TF
    # Serving's operators set gRPC's options (--grpc_channel_arguments, see grpc_api.py).
    grpc_connections: int = 4096  # grpc.max_allowed_incoming_connections
    # Calls at once on one gRPC connection. gRPC sets no cap of its own, and without one a client that
    # opens streams and resets them at once ("rapid reset", CVE-2023-44487) at 30,000 a second had most
    # other clients' calls CANCELLED; with a cap, gRPC's C core holds that client back (none failed).
    grpc_streams: int = 1000  # grpc.max_concurrent_streams
    # Requests one REST connection may have waiting behind the one being answered (HTTP pipelining):
    # each waiting request holds its headers and body.
    rest_pipelined: int = 64  # --rest_api_max_pipelined_requests


class ByteBudget:
    """Request bytes held at once. It lives on the event loop, where both doors run: no lock."""

    def __init__(self, total: int) -> None:
        self.total = self.free = total

    def take(self, size: int, held: int = 0) -> None:
        """`size` more bytes for a request that holds `held` already; refused at once when the request
        would pass the whole budget (INVALID_ARGUMENT) or when other requests hold too much of it now
        (RESOURCE_EXHAUSTED: worth a retry)."""
        if held + size > self.total:
            raise invalid_argument(
                f"the request is over {held + size} bytes, more than the server's limit of {self.total}"
            )
        if size > self.free:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the server holds too many request bytes at once; try again shortly",
            )
        self.free -= size

    def give_back(self, size: int) -> None:
        self.free += size

    @contextlib.contextmanager
    def holding(self, size: int) -> Iterator[None]:
        """`size` bytes taken for the duration of a block."""
        self.take(size)
        try:
            yield
        finally:
            self.give_back(size)
