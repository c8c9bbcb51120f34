"""A `requests` session whose calls end at a deadline, the wait for the answer's headers included.

requests' `timeout` bounds each read alone, and `http.client` reads the status line and headers a
line at a time: a server that sends its headers a byte a second holds the call for ever. Here each
connection, while it sends a request and reads the answer's headers, has a timer that shuts its
socket down at the call's deadline (`deadline(t)`), which ends any read or write blocked on it. The
body is read after that by the caller, who checks the same deadline between reads.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_DEADLINE: ContextVar[float | None] = ContextVar("deadline", default=None)


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Calls made inside end by `at` (time.monotonic()): one cut short by it raises TimeoutError."""
    token = _DEADLINE.set(at)
    try:
        yield
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        if time.monotonic() >= at:  # the watchdog cut the connection: whatever broke, it was late
            raise TimeoutError from None
        raise
    finally:
        _DEADLINE.reset(token)


class _Watched:
    """A connection shut down at the deadline of the call it serves, until its answer's headers are
    in. A mixin for urllib3's connections, whose `sock` it reads."""

    sock: socket.socket | None
    _watchdog: threading.Timer | None = None
    _was_cut = False

    def request(self, *args: Any, **kwargs: Any) -> None:
        at = _DEADLINE.get()
        self._was_cut = False
        if at is not None:
            self._watchdog = threading.Timer(max(0.0, at - time.monotonic()), self._cut)
            self._watchdog.daemon = True
            self._watchdog.start()
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            self._stand_down()
            raise

    def getresponse(self) -> Any:
        try:
            response = super().getresponse()  # type: ignore[misc]
        finally:
            self._stand_down()
        if self._was_cut:  # http.client may take a socket shut mid-headers for their end
            raise TimeoutError
        return response

    def _stand_down(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _cut(self) -> None:
        self._was_cut = True
        with contextlib.suppress(OSError, AttributeError):  # closed meanwhile: nothing to cut
            self.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter with pools of watched connections (a SOCKS proxy's pools are left as they are)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> urllib3.PoolManager:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if isinstance(manager, urllib3.ProxyManager):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def session() -> requests.Session:
    """A requests.Session whose calls made inside `deadline(...)` end by it."""
    watched = requests.Session()
    adapter = _WatchedAdapter()
    watched.mount("http://", adapter)
    watched.mount("https://", adapter)
    return watched
