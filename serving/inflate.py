"""Compressed requests, inflated within the server's request byte budget.

A few hundred KB of gzip inflate to hundreds of MB. gRPC's core would inflate a compressed message
whole before the server sees it, for every call at once: 20 calls of 200 KB took the server from 0.75
to 8 GB. So the server turns gRPC's own inflation off (`grpc.per_message_decompression`) and inflates
here, a chunk at a time, each chunk taken from the byte budget that every request in flight shares:
past it the request is refused, having cost at most that chunk. Inflating 200 MB takes about half a
second of CPU, so that work is done on a thread of its own, while the event loop serves others.

One thread for all requests: 20 bombs inflating on asyncio's six threads at once took both cores
and Python's lock from the loop and the model, and held the drill's probe 0.16-0.38 s; on one
thread, 0.14-0.16 s, most of it the parse of the one bomb that fits the budget. A request that
inflates to one chunk never waits for it: that chunk is inflated on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from serving.limits import ByteBudget

CHUNK = 1 << 20  # bytes inflated, and taken from the budget, at a time
GZIP = 16 + zlib.MAX_WBITS  # gzip's header and trailer (gRPC's "gzip")
ZLIB = zlib.MAX_WBITS  # zlib's (gRPC's "deflate", which is RFC 1950's zlib format)
INFLATER = ThreadPoolExecutor(1, thread_name_prefix="inflate")


def compression_of(message: bytes | bytearray) -> int | None:
    """The zlib window bits that inflate `message` if it is compressed by gRPC, else None.

    gRPC's per-message flag does not reach Python, so the message's own header tells: gzip's magic
    bytes (1f 8b) cannot begin a protocol buffer (field 3 with wire type 7, which does not exist), and
    a zlib header (RFC 1950: deflate, a multiple of 31) would begin one only with field 15 or below
    written as a varint first, which none of the services' requests has; a message that merely looks
    like zlib and does not inflate is parsed as it is."""
    header = message[:2]
    if header == b"\x1f\x8b":
        return GZIP
    if (
        len(header) == 2
        and header[0] & 0x0F == 8
        and header[0] >> 4 <= 7
        and int.from_bytes(header) % 31 == 0
    ):
        return ZLIB
    return None


async def inflated(data: bytes | bytearray, wbits: int, budget: ByteBudget, holding: int = 0) -> bytes:
    """`data` inflated, its bytes held in `budget` (the caller gives back as many as it has), for a
    request that holds `holding` bytes of it already (its compressed body, say). Over the budget: the
    budget's refusal (INVALID_ARGUMENT or RESOURCE_EXHAUSTED), with nothing held. Not one whole stream
    of that format, or bytes after its end: zlib.error, with nothing held (gRPC's core refuses trailing
    bytes too: "not all input consumed").

    The first chunk is inflated on the event loop; any more on INFLATER, as is the join of the chunks
    at the end: zlib and CPython's join of large buffers both let go of Python's lock, so a bomb's
    CPU and copying do not stall other requests. Growing one buffer on the loop instead, a chunk at a
    time, held the loop about 0.2 s in each round of the drill's 20 bombs of 200 MB. While the chunks
    are joined the message is in memory twice, for as long as one copy takes."""
    loop = asyncio.get_running_loop()
    inflater = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    size = 0
    working: Future[Any] | None = None  # INFLATER's job under way, which goes on if this call is cancelled
    try:
        part = inflater.decompress(data, CHUNK)
        while True:
            if part:
                budget.take(len(part), holding + size)
                size += len(part)
                parts.append(part)
            data = inflater.unconsumed_tail
            if inflater.eof or not (data or part):
                break
            working = INFLATER.submit(inflater.decompress, data, CHUNK)
            part = await asyncio.wrap_future(working)
        if not inflater.eof or inflater.unused_data:
            raise zlib.error("not one whole compressed stream")
        if len(parts) <= 1:
            return parts[0] if parts else b""
        working = INFLATER.submit(b"".join, parts)
        return await asyncio.wrap_future(working)
    except BaseException:
        if working is None or working.done():
            budget.give_back(size)
        else:  # cancelled while its job runs: the bytes are held until the job lets go of them
            working.add_done_callback(lambda _: _call_soon(loop, budget.give_back, size))
        raise


def _call_soon(loop: asyncio.AbstractEventLoop, call: Callable[[int], None], size: int) -> None:
    """`call(size)` on `loop`, from INFLATER's thread; nothing once the loop has closed (shutdown)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(call, size)
