"""serving/model_pool.py in process: model calls off the event loop, and the line in front of them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import grpc
import pytest

from serving.errors import ServingError
from serving.model_pool import ModelPool
from tests.conftest import run_coroutine

pytestmark = pytest.mark.fast


def test_the_model_pool_sheds_calls_past_its_line_with_unavailable() -> None:
    """ModelPool: calls beyond `max_waiting` are refused at once (UNAVAILABLE), not queued without end;
    once the line shortens, calls are taken again."""
    pool = ModelPool(threads=1, max_waiting=2)
    release = threading.Event()

    def held_call(answer: int) -> Callable[[], int]:
        return lambda: answer if release.wait(30) else -1

    async def scenario() -> tuple[list[int], BaseException | None, int]:
        held = [asyncio.ensure_future(pool.run(held_call(i))) for i in (1, 2)]
        await asyncio.sleep(0)  # both are in the line
        with pytest.raises(ServingError) as refused:
            await pool.run(lambda: 3)
        release.set()
        answers = [await h for h in held]
        return answers, refused.value, await pool.run(lambda: 4)

    try:
        answers, error, later = run_coroutine(scenario())
    finally:
        pool.shutdown()
    assert answers == [1, 2] and later == 4
    assert isinstance(error, ServingError) and error.code == grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in error.message
