"""Who trains: the cluster that `TF_CONFIG` describes, as tf.distribute defines it, read without TensorFlow.

`{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}`: every worker gets
the same cluster and its own index; worker 0 is the chief.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from cliargs import cannot_listen


class ClusterError(Exception):
    """The cluster failed during training (one line, for the user)."""


class TfConfigError(ClusterError):
    """TF_CONFIG is malformed: the run cannot start."""


@dataclass(frozen=True)
class Cluster:
    workers: tuple[str, ...]
    index: int

    @property
    def is_chief(self) -> bool:
        """Worker 0 writes the progress file, the checkpoints and the version, as tf.distribute's chief."""
        return self.index == 0

    @property
    def me(self) -> str:
        return f"worker {self.index} ({self.workers[self.index]})"


def cluster_from_env(environ: Mapping[str, str] = os.environ) -> Cluster | None:
    """The cluster `TF_CONFIG` describes; None without one, or for a cluster of one worker."""
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
        listed = config["cluster"]["worker"]
        if not isinstance(listed, list):  # a string would be read as its letters
            raise TypeError(f"cluster.worker is {type(listed).__name__}, not a list")
        workers = tuple(listed)
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as err:
        raise TfConfigError(
            'TF_CONFIG must look like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}: {type(err).__name__}: {err}'
        ) from None
    if "type" not in task:  # tf.distribute refuses such a task with a traceback
        raise TfConfigError('TF_CONFIG task needs "type": "worker" beside its index')
    if task["type"] != "worker":
        raise TfConfigError(f"TF_CONFIG task type {task.get('type')!r}: only 'worker' tasks are run here")
    if not workers or not all(_is_address(w) for w in workers):
        raise TfConfigError(
            f"TF_CONFIG cluster.worker must list host:port addresses (ports 1-65535), got {list(workers)}"
        )
    if len(set(workers)) < len(workers):
        raise TfConfigError(f"TF_CONFIG cluster.worker lists an address twice: {list(workers)}")
    if not 0 <= index < len(workers):
        raise TfConfigError(f"TF_CONFIG task index {index} is not one of the {len(workers)} workers")
    return Cluster(workers, index) if len(workers) > 1 else None


def _is_address(worker: object) -> bool:
    """host:port, the port a number a socket can have."""
    if not isinstance(worker, str) or ":" not in worker:
        return False
    host, port = worker.rsplit(":", 1)
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


def check_own_port(cluster: Cluster) -> None:
    """This worker's port free for TensorFlow's gRPC server, checked before TensorFlow is imported:
    taken (two workers given one index, or another program on it), TensorFlow fails with a traceback
    ("Could not start gRPC server"). Bound on every interface, as gRPC binds it."""
    port = int(cluster.workers[cluster.index].rsplit(":", 1)[1])
    refused = cannot_listen("", port)
    if refused is not None:
        raise TfConfigError(
            f"{cluster.me} cannot listen on port {port} ({refused.strerror}): give each worker its own "
            "index in TF_CONFIG, and a port no other program holds"
        )


def silent_peers(cluster: Cluster, timeout_s: float = 2.0) -> list[str]:
    """The other workers whose address takes no connection now: who to name when a step fails."""
    silent = []
    for index, address in enumerate(cluster.workers):
        if index == cluster.index:
            continue
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
        except OSError:
            silent.append(f"worker {index} ({address})")
    return silent
