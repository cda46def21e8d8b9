"""A time limit and a stall detector for one long-running container.

The build's log stream blocks until the container exits, so the limits are kept by a thread:
at the deadline it kills the container (the stream then ends and the caller sees why); when
no output has come for `stall_after` seconds it reports that once per stall, so a hung
`make` is visible in the log long before the deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Watchdog:
    def __init__(
        self,
        *,
        kill: Callable[[], None],
        timeout: float | None,
        stall_after: float | None,
        report: Callable[[str], None],
        poll: float = 5.0,
    ) -> None:
        self._kill = kill
        self._timeout = timeout
        self._stall_after = stall_after
        self._report = report
        self._poll = poll
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._last_output = self._started
        self._stall_reported = False
        self.timed_out = False
        self._thread = threading.Thread(target=self._watch, name="farm-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._started = self._last_output = time.monotonic()
        if self._timeout is not None or self._stall_after is not None:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def output(self) -> None:
        """Call for every line of output: it resets the stall clock."""
        self._last_output = time.monotonic()
        self._stall_reported = False

    def _watch(self) -> None:
        while not self._stop.wait(self._poll):
            now = time.monotonic()
            if self._timeout is not None and now - self._started >= self._timeout:
                self.timed_out = True
                self._report(f"time limit of {_minutes(self._timeout)} reached: killing")
                self._kill()
                return
            quiet = now - self._last_output
            if (
                self._stall_after is not None
                and quiet >= self._stall_after
                and not self._stall_reported
            ):
                self._stall_reported = True
                self._report(f"stalled? no output for {_minutes(quiet)}")


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes >= 1 else f"{seconds:.0f} s"
