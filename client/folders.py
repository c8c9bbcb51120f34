"""Many images through the model server: files, folders and globs expanded, each image read (bounded)
and normalised, batches sent while later ones are still being normalised, an outcome for every path.

What `mnist predict` does, as functions a program can call with a client of its own.
"""

from __future__ import annotations

import glob
import os
import signal
import stat
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.api import ServingClient
from client.normalise import ImageError, Limits, normalise_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MAX_FILE_BYTES = Limits().max_bytes  # what normalise takes; a larger file is refused unread


@dataclass(frozen=True)
class Target:
    """Which model, and which of its versions, the images go to."""

    model: str = "mnist"
    version: int | None = None
    label: str | None = None


@dataclass
class Outcome:
    path: str
    digit: int | None = None
    probabilities: tuple[float, ...] = ()
    version: int | None = None
    error: str | None = None


def expand(paths: Iterable[str]) -> Iterator[str]:
    """Files as given, folders walked for images, globs matched (a path that exists as written is that
    file, `[a].png` included); a missing path stays (and fails)."""
    for path in paths:
        if path == "-":
            yield path
        elif any(c in path for c in "*?[") and not os.path.lexists(path):
            yield from sorted(glob.glob(path, recursive=True))
        elif Path(path).is_dir():
            yield from sorted(str(p) for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def read(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, its size checked before any is read and the read bounded. Anything else
    (a FIFO, which would wait for a writer forever; /dev/zero, which never ends; a link to either) is
    refused at once: the file is opened without blocking and looked at before reading."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ImageError(err.strerror or str(err)) from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not a regular file")
        if info.st_size > limit:
            raise ImageError(f"the file is {info.st_size:,} bytes, over the limit of {limit:,} bytes")
        return file.read(limit + 1)  # one byte over, should it have grown: decode then refuses it


def normalise_files(paths: list[str], stdin: bytes = b"") -> list[np.ndarray | ImageError]:
    """Each file's model input, or what is wrong with it ("-" is `stdin`): one batch's work, done in
    a worker process when there are several batches."""
    tensors: list[np.ndarray | ImageError] = []
    for path in paths:
        try:
            if path == "-" and len(stdin) > MAX_FILE_BYTES:  # read only this far: it may never end
                raise ImageError(f"standard input holds more than the limit of {MAX_FILE_BYTES:,} bytes")
            tensors.append(normalise_bytes(stdin if path == "-" else read(path)).tensor)
        except ImageError as err:
            tensors.append(err)
    return tensors


def predict_batch(
    client: ServingClient, paths: list[str], tensors: list[np.ndarray | ImageError], target: Target
) -> list[Outcome]:
    """An outcome for each path: an unreadable image is its own error; a failed call to the server
    (unreachable, no such model or version) is raised, since every batch after it would fail alike."""
    outcomes = [Outcome(path) for path in paths]
    ready, images = [], []
    for outcome, tensor in zip(outcomes, tensors, strict=True):
        if isinstance(tensor, ImageError):
            outcome.error = str(tensor)
        else:
            ready.append(outcome)
            images.append(tensor)
    if ready:
        answers = client.predict(images, target.model, target.version, target.label)
        for outcome, answer in zip(ready, answers, strict=True):
            outcome.digit, outcome.probabilities, outcome.version = (
                answer.digit,
                answer.probabilities,
                answer.version,
            )
    return outcomes


def ignore_interrupts() -> None:
    """In the workers: Ctrl-C is the main process's to handle (else each worker prints a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def predicted(
    connect_client: Callable[[], ServingClient],
    batches: list[list[str]],
    target: Target,
    concurrency: int = 4,
) -> Iterator[list[Outcome]]:
    """Each batch's outcomes, in the order of the batches, until the server fails a call
    (ServingClientError, raised: what is not yet sent is dropped). Normalising dominates (about 4.5 ms an
    image on one core of an AMD EPYC, against 0.12 ms for its share of a batched Predict call), so
    with several batches it runs in one worker process per core, every batch queued at once; each
    batch is sent as soon as it is ready, up to `concurrency` requests at once, while the workers
    go on with the next ones."""
    # At most one byte over the limit: standard input may never end (`< /dev/zero`); decode refuses it.
    stdin = sys.stdin.buffer.read(MAX_FILE_BYTES + 1) if any("-" in batch for batch in batches) else b""
    stdins = [stdin if "-" in batch else b"" for batch in batches]
    if len(batches) == 1:
        yield predict_batch(connect_client(), batches[0], normalise_files(batches[0], stdin), target)
        return
    workers = ProcessPoolExecutor(min(len(batches), os.cpu_count() or 1), initializer=ignore_interrupts)
    senders = ThreadPoolExecutor(concurrency)
    try:
        # Queued before the client is made, so the workers are forked now: before the gRPC client
        # opens its channel, whose threads make a fork unsafe.
        normalised = workers.map(normalise_files, batches, stdins)
        client = connect_client()
        sending: deque[Future[list[Outcome]]] = deque()
        for paths, tensors in zip(batches, normalised, strict=True):
            sending.append(senders.submit(predict_batch, client, paths, tensors, target))
            while sending and (sending[0].done() or len(sending) >= concurrency):
                yield sending.popleft().result()
        while sending:
            yield sending.popleft().result()
    finally:  # Ctrl-C: the batches not yet normalised or sent are dropped
        senders.shutdown(wait=False, cancel_futures=True)
        workers.shutdown(wait=False, cancel_futures=True)
