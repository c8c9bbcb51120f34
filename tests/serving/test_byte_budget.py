"""serving/limits.py's ByteBudget in process: what requests on both doors may hold in memory at once."""

from __future__ import annotations

import grpc
import pytest

from serving.errors import ServingError
from serving.limits import ByteBudget

pytestmark = pytest.mark.fast


def refused(budget: ByteBudget, size: int, held: int = 0) -> ServingError:
    with pytest.raises(ServingError) as raised:
        budget.take(size, held)
    return raised.value


def test_a_request_larger_than_the_whole_budget_is_a_bad_request_at_once() -> None:
    budget = ByteBudget(100)
    budget.take(50)
    error = refused(budget, 60, held=50)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least 110 bytes, more than the server's limit of 100" in error.message
    assert budget.free == 50


def test_a_request_that_does_not_fit_now_is_told_to_retry_at_once_and_takes_nothing() -> None:
    budget = ByteBudget(100)
    budget.take(80)
    error = refused(budget, 40)
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "try again" in error.message
    assert budget.free == 20
    budget.give_back(80)
    budget.take(40)
    assert budget.free == 60


def test_bytes_held_for_a_block_are_given_back_however_it_ends() -> None:
    budget = ByteBudget(100)
    with pytest.raises(RuntimeError), budget.holding(70):
        assert budget.free == 30
        raise RuntimeError
    assert budget.free == 100


def test_large_requests_leave_an_eighth_of_the_budget_to_small_ones() -> None:
    """However many large requests arrive, a single image (a few KB) still fits."""
    mib = 1 << 20
    budget = ByteBudget(64 * mib)  # 8 MiB kept for requests of 1 MiB or less
    budget.take(40 * mib)
    assert refused(budget, 20 * mib).code == grpc.StatusCode.RESOURCE_EXHAUSTED  # 24 free, 16 to large
    budget.take(16 * mib)
    assert refused(budget, 2 * mib).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    for _ in range(8):
        budget.take(mib)  # small ones take the reserve
    assert budget.free == 0
    error = refused(ByteBudget(64 * mib), 60 * mib)  # never fits: a large one's limit is 56 MiB
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and f"limit of {56 * mib}" in error.message
    assert ByteBudget(64 * mib).largest == 56 * mib and ByteBudget(100).largest == 100
