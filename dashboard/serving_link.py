"""The dashboard's one connection to the model server, held for the life of the process.

It is made in the background as soon as any page first loads: the gRPC client loads the serving
API's protos and opens its channel, which would otherwise make a person's first prediction wait for
them where the later ones take milliseconds.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import streamlit as st

from client import ServingClient, ServingClientError
from client.addresses import grpc_target_problem
from dashboard.settings import settings


@st.cache_resource(show_spinner=False)
def _connecting(target: str) -> Future[ServingClient]:
    return ThreadPoolExecutor(1, thread_name_prefix="serving-link").submit(_connect, target)


def _connect(target: str) -> ServingClient:
    # Short timeout, one retry: a page should say "server down" in seconds, not hang.
    connected = ServingClient.grpc(target, timeout=5.0, retries=1, backoff=0.2)
    threading.Thread(target=_open_channel, args=(connected,), daemon=True).start()
    return connected


def _open_channel(connected: ServingClient) -> None:
    """One cheap call, so the channel is up before the first prediction. A server that is down now is
    the pages' to report when they are used, not this thread's."""
    with contextlib.suppress(ServingClientError):
        connected.status(settings().model_name)


def warm_up() -> None:
    """Start connecting, once per process (app.py calls this on every run; only the first counts)."""
    _connecting(settings().grpc)


def client() -> ServingClient:
    """The connection, once made; a SERVING_GRPC that is no gRPC target stops the page, saying what to
    set, where every call would fail as "not answering"."""
    problem = grpc_target_problem(settings().grpc)
    if problem:
        st.error(
            f"SERVING_GRPC {problem}. Set it in the dashboard's environment, then restart the dashboard."
        )
        st.stop()
    connecting = _connecting(settings().grpc)
    if not connecting.done():  # only on a page opened within seconds of the dashboard's start
        with st.spinner("Connecting to the model server..."):
            return connecting.result()
    return connecting.result()


def not_answering(err: ServingClientError) -> bool:
    """Whether a call failed for want of an answer (the server down, a balancer with no replica
    behind it, a server still loading its first versions), not for what it asked."""
    return err.status in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
