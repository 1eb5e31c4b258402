"""Metrics off the hot path: the step path's counts are kept per thread and written to prometheus_client in batches.

Under gunicorn every `inc()` or `observe()` of a prometheus_client value takes a lock and writes an mmap'd file
(https://prometheus.github.io/client_python/multiprocess/): a step's histogram, its counters by env and by tenant
and the request histogram cost about 12 us, 5% of a streamed step's server CPU. Here the step path adds to a dict of
its own thread (owner-written only, so no lock), and a flush writes each thread's growth since the last flush, once
per series: in the background every FLUSH_SECONDS, on every read of the default registry (a collector registered
ahead of every metric), and at the start of every `/metrics` scrape, which also waits for every sibling worker's
flush that began after the scrape did (`Marks`). So a scrape still counts every request answered before it began.
A worker killed outright (SIGKILL, OOM) loses at most its last FLUSH_SECONDS of counts.

prometheus_client internals used (tests/unit/test_prometheus_contract.py fails when one changes): a histogram child's
`_upper_bounds`, `_buckets` (one value per bound, not cumulative) and `_sum`, each value's `inc()`.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import glob
import os
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

FLUSH_SECONDS = 0.05  # at most this long between a count and its write (the bound: 100 ms)
WAIT_SECONDS = 1.0  # the longest a scrape waits for a sibling's flush (one stuck holding the GIL is read as it is)
_MARK = struct.Struct("d")


class _Thread:
    """One thread's counts (written by that thread only) and how much of them the flushes wrote (flushes only)."""

    __slots__ = ("counts", "thread", "written")

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.counts: dict[Any, Any] = {}
        self.written: dict[Any, Any] = {}


class Tallies:
    """Every thread's counts of deferred metrics, and the flush that writes them."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._threads: list[_Thread] = []
        self._lock = threading.Lock()  # one flush at a time, and the list of threads

    def mine(self) -> dict[Any, Any]:
        """This thread's counts, keyed by the deferred metric."""
        try:
            counts: dict[Any, Any] = self._local.counts
        except AttributeError:
            own = _Thread(threading.current_thread())
            with self._lock:
                self._threads.append(own)
            counts = self._local.counts = own.counts
        return counts

    def flush(self) -> None:
        """Write every thread's counts added since the last flush; forget threads that ended (after their last)."""
        with self._lock:
            ended = []
            for own in self._threads:
                alive = own.thread.is_alive()  # before the read: a thread that ended has counted its last
                for key, count in own.counts.copy().items():  # a dict copy is one step under the GIL
                    now = key.snapshot(count)
                    key.write(now, own.written.get(key))
                    own.written[key] = now
                if not alive:
                    ended.append(own)
            for own in ended:
                self._threads.remove(own)


TALLIES = Tallies()


class Counted:
    """A count kept by one or more counter children at once (a step: by env id and by tenant), deferred."""

    __slots__ = ("children",)

    def __init__(self, children: tuple[Any, ...]) -> None:
        self.children = children

    def inc(self, amount: float = 1) -> None:
        counts = TALLIES.mine()
        counts[self] = counts.get(self, 0) + amount

    @staticmethod
    def snapshot(count: float) -> float:
        return count

    def write(self, now: float, written: float | None) -> None:
        grown = now - (written or 0)
        if grown:
            for child in self.children:
                child.inc(grown)


class Observed:
    """A histogram child's observations, deferred: a count per bucket and their sum."""

    __slots__ = ("bounds", "child")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds = list(child._upper_bounds)  # ends with +Inf: every value has a bucket

    def observe(self, amount: float) -> None:
        counts = TALLIES.mine()
        row = counts.get(self)
        if row is None:
            row = counts[self] = [0] * (len(self.bounds) + 1)  # the buckets, then the sum
        row[bisect.bisect_left(self.bounds, amount)] += 1  # the first bound >= amount: Prometheus' `le`
        row[-1] += amount

    @staticmethod
    def snapshot(row: list[float]) -> list[float]:
        return row.copy()  # the thread goes on adding to its row

    def write(self, now: list[float], written: list[float] | None) -> None:
        before = written or [0] * len(now)
        # zip stops at the buckets: `now` and `before` end with the sum, written after them.
        for value, count, old in zip(self.child._buckets, now, before, strict=False):
            if count != old:
                value.inc(count - old)
        if now[-1] != before[-1]:
            self.child._sum.inc(now[-1] - before[-1])


@functools.cache
def counted(*children: Any) -> Counted:
    """The deferred count of these children: one per set of series (children are prometheus_client's, one per label
    set), so that the threads' dicts stay as small as the series are few."""
    return Counted(children)


@functools.cache
def observed(child: Any) -> Observed:
    """The deferred observations of this histogram child (one per series)."""
    return Observed(child)


class Flushing:
    """A collector registered ahead of every metric of a registry: reading it reads every count made before."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        TALLIES.flush()
        return iter(())


class Marks:
    """When each worker's last flush began, in a file of its own beside the multiprocess files; a scrape waits for
    its siblings' marks to pass its own start."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, pid: int) -> str:
        return os.path.join(self.directory, f"tally_flushed_{pid}.mark")

    def write(self, fd: int, began: float) -> None:
        os.pwrite(fd, _MARK.pack(began), 0)

    def wait_for_others(self, since: float, timeout: float = WAIT_SECONDS) -> None:
        """Until every other worker's flush that began after `since` is done (or `timeout`: a stuck one is read as
        its files are)."""
        mine = self.path(os.getpid())
        waiting = [p for p in glob.glob(os.path.join(self.directory, "tally_flushed_*.mark")) if p != mine]
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            waiting = [p for p in waiting if _read_mark(p) < since]
            if waiting:
                time.sleep(0.005)

    def remove(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path(pid))


def _read_mark(path: str) -> float:
    """A worker's mark; +Inf when its file is gone (it exited, and its master removed it: nothing to wait for)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MARK.size)
    except OSError:
        return float("inf")
    return _MARK.unpack(data)[0] if len(data) == _MARK.size else 0.0


class Flusher:
    """A worker's background flush, every FLUSH_SECONDS, each marked with when it began."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self._stop = threading.Event()
        self._fd = -1

    def start(self) -> None:
        self._fd = os.open(self.marks.path(os.getpid()), os.O_RDWR | os.O_CREAT, 0o600)
        threading.Thread(target=self._loop, name="gymserve-tallies", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            TALLIES.flush()
            self.marks.write(self._fd, began)
            self._stop.wait(max(0.0, FLUSH_SECONDS - (time.monotonic() - began)))

    def stop(self) -> None:
        """The last flush (a worker on its way out)."""
        self._stop.set()
        TALLIES.flush()
