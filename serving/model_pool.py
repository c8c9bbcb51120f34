"""Model calls off the event loop: a thread pool sized to the cores, and a bounded line in front of it.

The front doors parse and answer on one asyncio loop; a model call (LiteRT or TensorFlow, which let go
of the GIL while they compute) runs on one of these threads, so the loop keeps taking requests. When
more calls wait than the line holds, a request is refused with UNAVAILABLE at once: the server sheds
load instead of holding ever more requests in memory while each waits longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc

from serving.errors import ServingError

Result = TypeVar("Result")


class ModelPool:
    def __init__(self, threads: int, max_waiting: int) -> None:
        """`max_waiting`: calls queued or running at once; one more is UNAVAILABLE."""
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")
        self._max_waiting = max_waiting
        self._waiting = 0  # touched on the loop only

    async def run(self, call: Callable[[], Result]) -> Result:
        if self._waiting >= self._max_waiting:
            raise ServingError(
                grpc.StatusCode.UNAVAILABLE,
                f"the server is overloaded: {self._waiting} model calls are waiting; try again later",
            )
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        finally:
            self._waiting -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
