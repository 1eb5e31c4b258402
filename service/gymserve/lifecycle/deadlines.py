"""Every env call's deadline, kept by one watchdog thread per worker: a call costs two dict writes, no thread switch.

The rules (docs/operations.md, "What one env may cost"):
- A call (reset, step, render, fork, snapshot; batch items and frames) has GYMSERVE_STEP_TIMEOUT_SECONDS, or the
  first GYMSERVE_STEP_TIMEOUT_OVERRIDES entry matching its env id. Past it, the watchdog answers the caller
  `504 step_timeout` itself (the caller's thread is stuck in the env), quarantines the env (`409 env_quarantined`
  from then on) and raises an asynchronous exception in the stuck thread: a pure-Python loop stops there.
- A call running over SLOW_SECONDS gets a spare thread, so slow calls never take the threads other envs need (nor
  the health and metrics endpoints); a short GIL switch interval keeps a stuck Python loop from starving them.
  With a tenants file, one tenant may hold at most GYMSERVE_TENANT_THREAD_SHARE of a worker's threads in slow
  calls: past it, its new calls get `429 tenant_busy`.
  A thread waiting on a call another worker runs (a forward, a sub-batch) counts the same, without a deadline of
  its own: the owner answers 504 on that hop.
- A call still stuck WRITE_OFF_SECONDS after its deadline (a sleep, native code, blocking I/O: nothing Python can
  stop) is written off. More than GYMSERVE_MAX_STUCK_THREADS written off, and the worker is replaced: it parks
  its other envs, which its successor adopts (`too_many_stuck`, given to the worker by gunicorn_conf).
- A call that holds the GIL for good stops this thread too: gunicorn's master kills that worker, and its envs are
  lost with `details.reason: "worker_stuck"`.
"""

from __future__ import annotations

import ctypes
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..errors import GymServeError, StepTimeout, TenantBusy
from ..settings import Settings

log = logging.getLogger(__name__)

SLOW_SECONDS = 0.1  # a call running this long gets a spare thread, and counts against its tenant's share
WRITE_OFF_SECONDS = 2.0  # after its deadline: a call not back by then cannot be stopped
TICK_SECONDS = 0.05  # how often the watchdog looks
# The GIL's switch interval in a worker (CPython's default: 5 ms). A thread waiting for the GIL gets it after at
# most this long from each thread that holds it: with 6 stuck Python loops in a worker (issue 24's bench), the
# other envs' steps took p50 80 ms and p99 0.55 s at 5 ms, 37 ms and 0.2 s at 1 ms, and /healthz 1.2 s and 0.1 s.
SWITCH_SECONDS = 0.001
MAX_SPARE_FACTOR = 8  # spare threads: at most this many times the worker's threads

LateAnswer = Callable[[GymServeError], None]  # writes the caller's answer now, from the watchdog's thread


class Interrupted(BaseException):
    """Raised by the watchdog inside a thread stuck past its deadline (a BaseException: `except Exception` in an
    env's code does not swallow it)."""


@dataclass(eq=False, slots=True)
class Running:
    """One env call in flight."""

    instance_id: str
    env_id: str
    tenant: str
    thread: int
    started: float
    deadline: float
    seconds: float
    answer: LateAnswer | None
    done: bool = False
    slow: bool = False
    timed_out: bool = False
    written_off: bool = False
    answered: threading.Event | None = None  # made when it times out (an Event per call cost 4 us of a step)


class _Held:
    """One call under its deadline, as a context manager: the watchdog's interrupt ends the call's body, and the call
    then raises StepTimeout (a class, not a generator: each step enters one, at a third of a generator's cost)."""

    __slots__ = ("deadlines", "running")

    def __init__(self, deadlines: Deadlines, running: Running) -> None:
        self.deadlines, self.running = deadlines, running

    def __enter__(self) -> None:
        self.deadlines._running[id(self.running)] = self.running

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        self.deadlines._leave(self.running)  # StepTimeout when the watchdog ended it
        return kind is not None and issubclass(kind, Interrupted)  # the watchdog's: answered by _leave


class Deadlines:
    """The worker's env calls in flight and their deadlines. `quarantine(instance_id)` marks an env that ran past
    its deadline; `spares(n)` tells the worker how many spare threads slow calls hold now; `too_many_stuck()` asks
    for the worker's replacement."""

    def __init__(self, settings: Settings, threads: int, shared: bool) -> None:
        self.settings = settings
        self.threads = threads
        self.share = max(1, int(threads * settings.tenant_thread_share)) if shared else None
        self.quarantine: Callable[[str], None] = lambda instance_id: None
        self.spares: Callable[[int], None] = lambda n: None
        self.slow_threads: Callable[[set[int]], None] = lambda threads: None  # the threads of slow calls, as they grow
        self.too_many_stuck: Callable[[], None] = lambda: None
        self._running: dict[int, Running] = {}
        self._lock = threading.Lock()  # the watchdog's pass, and a call's end
        self._limits: dict[str, float] = {}
        self._slow = 0
        self._stuck = 0
        self._replacing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def limit(self, env_id: str) -> float:
        seconds = self._limits.get(env_id)
        if seconds is None:
            seconds = self._limits[env_id] = self.settings.step_timeout(env_id)
        return seconds

    def call(self, instance_id: str, env_id: str, tenant: str, answer: LateAnswer | None) -> Any:
        """One env call under its deadline: StepTimeout when the watchdog ended it, TenantBusy before it runs."""
        return self._held(instance_id, env_id, tenant, self.limit(env_id), answer)

    def waiting(self, instance_id: str, tenant: str, admitted: bool = False) -> Any:
        """A thread waiting on an env call that another worker or replica runs (a forward, a batch's sub-batch):
        no deadline here (the owner keeps it and answers 504 on this hop), but a spare thread once it is slow and
        a place in its tenant's share, as a call of its own would have (`admitted`: `admit` said so already)."""
        return self._held(instance_id, "", tenant, math.inf, None, admitted)

    def _held(
        self,
        instance_id: str,
        env_id: str,
        tenant: str,
        seconds: float,
        answer: LateAnswer | None,
        admitted: bool = False,
    ) -> _Held:
        if not admitted:
            self.admit(tenant)
        now = time.monotonic()
        running = Running(instance_id, env_id, tenant, threading.get_ident(), now, now + seconds, seconds, answer)
        return _Held(self, running)

    def admit(self, tenant: str) -> None:
        """TenantBusy when the tenant's slow calls hold its whole share of this worker's threads."""
        if self.share is None:
            return
        slow = sum(1 for r in list(self._running.values()) if r.tenant == tenant and r.slow and not r.done)
        if slow >= self.share:
            raise TenantBusy(tenant, self.share)

    def _leave(self, running: Running) -> None:
        while True:
            try:
                was_slow = self._settle(running)
                break
            except Interrupted:
                continue  # it came back just as the watchdog interrupted it: settled again (each step is idempotent)
        if was_slow:
            self._give_spares(self._slow)
        if running.timed_out:
            assert running.answered is not None  # made with timed_out, under the lock
            running.answered.wait(1.0)  # the watchdog's answer goes out first; this thread's then meets a closed socket
            raise StepTimeout(running.instance_id, running.seconds)

    def _settle(self, running: Running) -> bool:
        """The call is over: forgotten, its interrupt cancelled, its spare thread given back (True if it had one)."""
        was_slow = False
        with self._lock:
            running.done = True
            self._running.pop(id(running), None)
            if running.timed_out:
                _raise_in(running.thread, None)  # its interrupt, if still pending, must not hit the next request
            if running.slow:
                self._slow -= 1
                running.slow, was_slow = False, True
            if running.written_off:
                self._stuck -= 1
                running.written_off = False
                log.warning("a written-off call of env %s came back", running.instance_id)
        return was_slow

    def _give_spares(self, slow: int) -> None:
        self.spares(min(slow, MAX_SPARE_FACTOR * self.threads))

    # --- the watchdog ---

    def start(self) -> None:
        sys.setswitchinterval(SWITCH_SECONDS)
        self._thread = threading.Thread(target=self._watch, name="gymserve-deadlines", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.check(time.monotonic())
            except Exception:  # the watchdog must outlive any one bad call
                log.exception("the deadline watchdog failed a pass")

    def check(self, now: float) -> None:
        """One pass: slow calls get spare threads, calls past their deadline are ended, stuck ones written off."""
        grew, ended = False, []
        with self._lock:
            for running in list(self._running.values()):
                if not running.slow and now - running.started >= min(SLOW_SECONDS, running.seconds):
                    running.slow, grew = True, True
                    self._slow += 1
                if not running.timed_out and now >= running.deadline:
                    running.timed_out, running.answered = True, threading.Event()
                    _raise_in(running.thread, Interrupted)
                    ended.append(running)
                elif running.timed_out and not running.written_off and now >= running.deadline + WRITE_OFF_SECONDS:
                    running.written_off = True
                    self._stuck += 1
                    log.error(
                        "a call of env %s (%s) is stuck for good: written off (%d of GYMSERVE_MAX_STUCK_THREADS=%d)",
                        running.instance_id,
                        running.env_id,
                        self._stuck,
                        self.settings.max_stuck_threads,
                    )
            slow, stuck = self._slow, self._stuck
            slow_threads = {r.thread for r in self._running.values() if r.slow and not r.done} if grew else set()
        for running in ended:
            self._timed_out(running)
        if grew:
            self._give_spares(slow)
            self.slow_threads(slow_threads)
        if stuck > self.settings.max_stuck_threads and not self._replacing:
            self._replacing = True
            metrics.WORKERS_REPLACED.labels("stuck_calls").inc()
            threading.Thread(target=self.too_many_stuck, name="gymserve-replace", daemon=True).start()

    def _timed_out(self, running: Running) -> None:
        """Quarantine the env and answer its caller now (its own thread may never come back)."""
        log.warning(
            "env %s (%s) ran past its deadline of %gs: quarantined",
            running.instance_id,
            running.env_id,
            running.seconds,
        )
        metrics.ENV_CALL_TIMEOUTS.labels(running.env_id, running.tenant).inc()
        metrics.ENVS_QUARANTINED.labels(running.env_id, running.tenant).inc()
        self.quarantine(running.instance_id)
        try:
            if running.answer is not None:
                running.answer(StepTimeout(running.instance_id, running.seconds))
        except OSError:
            pass  # the caller is gone already
        finally:
            assert running.answered is not None
            running.answered.set()

    @property
    def stuck(self) -> int:
        """Calls written off now (stuck past their deadline and its grace)."""
        return self._stuck


def _raise_in(thread: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in `thread` at its next bytecode (None: cancel one pending). Native code and sleeps run on."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(exc) if exc else None)
