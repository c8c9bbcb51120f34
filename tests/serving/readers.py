"""Module-level readers for JsonParsing's worker process in tests: a spawned worker imports the module a
function comes from, so these live apart from the test modules (and their heavy imports)."""

from __future__ import annotations

import os
import time

import grpc

from serving.errors import ServingError


def reader_pid(body: bytes) -> int:
    return os.getpid()


def refuse(body: bytes, message: str) -> None:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def stall(body: bytes) -> None:
    time.sleep(60)
