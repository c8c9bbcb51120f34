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
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.api import ServingClient
from client.decode import SHRINK, ImageError, Limits
from client.normalise import normalise_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
MAX_FILE_BYTES = Limits().max_bytes  # what normalise takes; a larger file is refused unread
# Phones' photos in HEIF containers: walked too, so each is reported rather than skipped, since
# normalise decodes none of them (it says so, by name).
HEIF_SUFFIXES = {".heic", ".heif", ".avif"}


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
    """Files as given, folders walked for images (the folders inside them walked, not listed; links to
    folders not followed), globs matched and each match taken as if given, as the shell's own
    expansion would be (a path that exists as written is that file, `[a].png` included). A path that
    yields nothing stays, and fails: a missing file, a pattern that matches nothing, a folder with no
    images are each an input the user meant, not one to drop without a word."""
    for path in paths:
        if path == "-":
            yield path
        elif glob.has_magic(path) and not os.path.lexists(path):
            yield from list(expand(matches(path))) or [path]
        elif _is_dir(path):
            yield from images_under(path) or [path]
        else:
            yield path


def _is_dir(path: str) -> bool:
    """Whether `path` is a folder; not when it cannot be looked at (a name too long, a folder on the
    way that may not be entered): it then fails as the input it is, with the system's words."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False


def images_under(folder: str) -> list[str]:
    """The images in a folder and the folders inside it (links to folders not followed), sorted, then
    the folders that could not be read: each fails as an input ("Permission denied"), not dropped."""
    found, unreadable = [], []
    for root, _, files in os.walk(folder, onerror=lambda err: unreadable.append(str(err.filename))):
        found += [
            os.path.join(root, name)
            for name in files
            if Path(name).suffix.lower() in IMAGE_SUFFIXES | HEIF_SUFFIXES
        ]
    return sorted(found) + sorted(unreadable)


def matches(pattern: str) -> list[str]:
    """A glob's matches, sorted, as bash's globstar finds them: `**` walks folders but not links to
    folders (glob.glob follows them: a link to its own folder made it list one file forty times, two
    such links for ever), and a name starting with a dot matches only a pattern that names one."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    anchor, rest = Path(*parts[:fixed]), parts[fixed:]
    hidden_too = any(part.startswith(".") for part in rest)
    found = (
        path
        for path in anchor.glob(str(Path(*rest)))  # pathlib's `**` does not follow links (Python 3.11)
        if hidden_too or not any(name.startswith(".") for name in path.relative_to(anchor).parts)
    )
    return sorted(str(path) for path in found)


def read(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """A regular file's bytes, its size checked before any is read and the read bounded. Anything else
    (a FIFO, which would wait for a writer forever; /dev/zero, which never ends; a link to either) is
    refused at once: the file is opened without blocking and looked at before reading."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ImageError(err.strerror or str(err)) from None
    try:  # looked at before reading: os.open opens a folder (`x.png/`) without complaint
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):  # expand() walks folders: one that comes here has no images
            raise ImageError("a folder with no images in it")
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not a regular file")
        if info.st_size > limit:
            raise ImageError(
                f"the file is {info.st_size:,} bytes, over the limit of {limit:,} bytes: {SHRINK}"
            )
        with open(descriptor, "rb", closefd=False) as file:  # one byte over, should it have grown:
            return file.read(limit + 1)  # decode then refuses it
    finally:
        os.close(descriptor)


def normalise_files(paths: list[str], stdin: bytes = b"") -> list[np.ndarray | ImageError]:
    """Each file's model input, or what is wrong with it ("-" is `stdin`): one batch's work, done in
    a worker process when there are several batches."""
    tensors: list[np.ndarray | ImageError] = []
    for path in paths:
        try:
            if path == "-" and len(stdin) > MAX_FILE_BYTES:  # read only this far: it may never end
                raise ImageError(f"standard input holds more than the limit of {MAX_FILE_BYTES:,} bytes")
            data = stdin if path == "-" else read(path)
            tensors.append(normalise_bytes(data).tensor)
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
) -> Generator[list[Outcome], None, None]:
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
        # opens its channel, whose threads make a fork unsafe. Never cancelled (see terminate_workers).
        normalised = [workers.submit(normalise_files, *job) for job in zip(batches, stdins, strict=True)]
        client = connect_client()
        sending: deque[Future[list[Outcome]]] = deque()
        for paths, tensors in zip(batches, normalised, strict=True):
            sending.append(senders.submit(predict_batch, client, paths, tensors.result(), target))
            while sending and (sending[0].done() or len(sending) >= concurrency):
                yield sending.popleft().result()
        while sending:
            yield sending.popleft().result()
    finally:  # Ctrl-C, a failed call, a closed pipe: the batches not yet normalised or sent are dropped
        senders.shutdown(wait=False, cancel_futures=True)
        terminate_workers(workers)


def terminate_workers(workers: ProcessPoolExecutor) -> None:
    """Stops the worker processes now, in the middle of their batches. The executor's shutdown lets
    running batches finish, and the interpreter's exit waits for them: seconds after Ctrl-C, a failed
    call or a closed pipe, and a second Ctrl-C in that wait left the process hung in a join. What
    Python 3.14's ProcessPoolExecutor.terminate_workers() does, on 3.11, whose executor has two
    races with it: a cancelled batch gets a traceback when the executor finds its workers gone (so
    none is cancelled), and the interpreter's exit may wake the executor's thread as it closes (so
    that thread is waited for here, a few milliseconds once the workers are gone)."""
    for process in list((workers._processes or {}).values()):  # private until 3.14: see above
        if process.is_alive():
            process.terminate()
    workers.shutdown(wait=True)
