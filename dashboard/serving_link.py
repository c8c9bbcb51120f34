"""The dashboard's one connection to the model server, held for the life of the process."""

from __future__ import annotations

import streamlit as st

from client import ServingClient
from dashboard.settings import settings


@st.cache_resource(show_spinner="Connecting to the model server...")
def serving_client(target: str) -> ServingClient:
    # Short timeout, one retry: a page should say "server down" in seconds, not hang.
    return ServingClient.grpc(target, timeout=5.0, retries=1, backoff=0.2)


def client() -> ServingClient:
    return serving_client(settings().grpc)
