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

# gRPC's own caps, as channel arguments (--grpc_channel_arguments): the Limits field that holds each.
GRPC_CAPS = {
    "grpc.max_allowed_incoming_connections": "grpc_connections",
    "grpc.max_concurrent_streams": "grpc_streams",
    "grpc.server.max_pending_requests": "grpc_pending_calls",
    "grpc.server.max_pending_requests_hard_limit": "grpc_pending_calls_limit",
}


@dataclass(frozen=True)
class Limits:
    # Bytes of request bodies and messages held at once over both doors: JSON and protos take several
    # times their size once read, so this bounds what requests hold together however many arrive.
    request_bytes: int = 256 << 20  # --max_request_bytes_in_flight
    # One request tensor's size as its shape claims it, checked before anything is allocated.
    tensor_bytes: int = 256 << 20  # --max_tensor_bytes
    # One request tensor filled from fewer values than its shape holds (TensorFlow repeats the last):
    # a few bytes on the wire may otherwise ask for a whole tensor_bytes of memory, and of model work.
    filled_tensor_bytes: int = 16 << 20  # --max_filled_tensor_bytes
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
    # Calls that gRPC's core holds until the server's loop takes them (one at a time): past the first
    # number it cancels new ones at random, more of them the nearer the second, all past it. gRPC's
    # own 1,000 and 3,000 suit a C++ server that takes calls on many threads; our one Python loop
    # takes them more slowly, and with those a burst of 20,000 calls at once from 20 connections had
    # 2,598 cancelled, other clients' calls among them. With these, none on an Intel Xeon, 0-302 on a
    # slower AMD EPYC (the cancelled answered CANCELLED); with 100,000 and 200,000, none there either,
    # but a call then waits behind all the others (the loop took 10,000 in about a second).
    grpc_pending_calls: int = 10_000  # grpc.server.max_pending_requests
    grpc_pending_calls_limit: int = 20_000  # grpc.server.max_pending_requests_hard_limit
    # How long a gRPC call may take to send its request message. gRPC has no such limit, and a call
    # opened with nothing sent holds about 17 KB on this server until its client leaves: at the caps
    # above, tens of GB.
    grpc_request_s: float = 30.0  # --grpc_request_timeout_in_ms
    # Requests one REST connection may have waiting behind the one being answered (HTTP pipelining):
    # each waiting request holds its headers and body.
    rest_pipelined: int = 64  # --rest_api_max_pipelined_requests

    def grpc_caps(self) -> list[tuple[str, int]]:
        """gRPC's own caps as channel arguments, at their values here."""
        return [(argument, getattr(self, field)) for argument, field in GRPC_CAPS.items()]


SMALL_REQUEST = 1 << 20  # bytes: a request this size or less may use the budget's reserve


class ByteBudget:
    """Request bytes held at once. It lives on the event loop, where both doors run: no lock.

    An eighth of it is kept for small requests (SMALL_REQUEST or less): large ones, however many, cannot
    hold it all, so a server busy with them still answers single images. Without the reserve, 20 gRPC
    requests of 200 KB of gzip each, inflating to 200 MB, had another client's one-image predicts
    refused (RESOURCE_EXHAUSTED) while they were read."""

    def __init__(self, total: int) -> None:
        self.total = self.free = total
        self.reserve = total // 8

    def limit_for(self, size: int) -> int:
        """The most a request of `size` bytes may hold: all of the budget when it is small, all but
        the reserve otherwise."""
        return self.total if size <= SMALL_REQUEST else self.total - self.reserve

    @property
    def largest(self) -> int:
        """The largest request that can ever be held."""
        return max(self.limit_for(self.total), min(self.total, SMALL_REQUEST))

    def take(self, size: int, held: int = 0) -> None:
        """`size` more bytes for a request that holds `held` already; refused at once when the request
        would pass what it may ever hold (INVALID_ARGUMENT) or when other requests hold too much of it
        now (RESOURCE_EXHAUSTED: worth a retry)."""
        whole = held + size
        limit = self.limit_for(whole)
        if whole > limit:
            raise invalid_argument(
                f"the request is at least {whole} bytes, more than the server's limit of {limit}"
            )
        if size > self.free - (self.total - limit):
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
