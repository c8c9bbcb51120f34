"""Requests in flight, counted, so that an unload or a stop can wait for the last one to finish."""

from __future__ import annotations

import threading


class InFlight:
    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def enter(self) -> None:
        with self._idle:
            self._count += 1

    def leave(self) -> None:
        with self._idle:
            self._count -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is in flight; False if something still is after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)
