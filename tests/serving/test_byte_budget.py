"""serving/rest.py's ByteBudget in process: what REST bodies may hold in memory at once."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from serving.errors import ServingError
from serving.rest import ByteBudget
from tests.conftest import run_coroutine

pytestmark = pytest.mark.fast


def test_a_body_larger_than_the_whole_budget_is_a_bad_request_at_once() -> None:
    budget = ByteBudget(100)
    with pytest.raises(ServingError) as refused:
        run_coroutine(budget.take(60, held=50, timeout_s=5))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "over 110 bytes, more than the server's limit of 100" in refused.value.message
    assert budget.free == 100


def test_a_body_that_does_not_fit_yet_waits_for_bytes_given_back() -> None:
    budget = ByteBudget(100)

    async def scenario() -> int:
        await budget.take(80, held=0, timeout_s=1)
        waiting = asyncio.ensure_future(budget.take(40, held=0, timeout_s=5))
        await asyncio.sleep(0)
        assert not waiting.done()  # 20 bytes free, 40 wanted
        budget.give_back(80)
        await waiting
        return budget.free

    assert run_coroutine(scenario()) == 60


def test_a_body_that_waits_past_the_timeout_is_unavailable() -> None:
    budget = ByteBudget(100)

    async def scenario() -> None:
        await budget.take(90, held=0, timeout_s=1)
        await budget.take(20, held=0, timeout_s=0.05)

    with pytest.raises(ServingError) as refused:
        run_coroutine(scenario())
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert budget.free == 10  # the refused body took nothing
