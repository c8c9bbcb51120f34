"""JsonParsing's worker process in tests: module-level readers for it, and the scenarios that use them.

A spawned worker first re-runs the parent's main script. Streamlit's AppTest (the dashboard's tests)
leaves a dashboard page as the test process's `__main__`, so the scenarios run in a `python -c`
process of their own (`run_scenario`), whose main is nothing to re-run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from serving.errors import ServingError
from serving.json_bodies import IN_LOOP_BYTES, JsonParsing

LARGE = b" " * (IN_LOOP_BYTES + 1)


def reader_pid(body: bytes) -> int:
    return os.getpid()


def refuse(body: bytes, message: str) -> None:
    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def stall(body: bytes) -> None:
    time.sleep(60)


async def where_bodies_are_read(parsing: JsonParsing) -> dict[str, object]:
    small = await parsing.run(reader_pid, b"{}")
    first, second = await parsing.run(reader_pid, LARGE), await parsing.run(reader_pid, LARGE)
    try:
        await parsing.run(refuse, LARGE, "no good")
        refused: list[str] = []
    except ServingError as err:
        refused = [err.code.name, err.message]
    return {"here": os.getpid(), "small": small, "first": first, "second": second, "refused": refused}


async def a_worker_killed_mid_parse(parsing: JsonParsing) -> dict[str, object]:
    worker = await parsing.run(reader_pid, LARGE)
    stalled = asyncio.ensure_future(parsing.run(stall, LARGE))
    await asyncio.sleep(0)  # the call is submitted; a worker's death fails whatever it holds
    os.kill(worker, signal.SIGKILL)
    try:
        await stalled
        code = "OK"
    except ServingError as err:
        code = err.code.name
    return {"here": os.getpid(), "killed": worker, "code": code, "next": await parsing.run(reader_pid, LARGE)}


def main(name: str) -> None:
    parsing = JsonParsing()
    try:
        print(json.dumps(asyncio.run(asyncio.wait_for(globals()[name](parsing), 60))))
    finally:
        parsing.close()


def run_scenario(name: str, root: Path) -> dict[str, object]:
    """One of the scenarios above in a fresh `python -c` process; what it found."""
    code = f"from tests.serving.readers import main; main({name!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found
