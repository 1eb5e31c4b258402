"""lifecycle.deadlines: the watchdog's rules on real threads, its passes driven by the test (check(now))."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest

from gymserve.errors import GymServeError, StepTimeout, TenantBusy
from gymserve.lifecycle import deadlines
from gymserve.lifecycle.deadlines import Deadlines
from gymserve.settings import Settings, SettingsError


def make(shared: bool = False, **settings: Any) -> Deadlines:
    return Deadlines(Settings(**{"step_timeout_seconds": 0.2, **settings}), threads=4, shared=shared)


def in_thread(dl: Deadlines, body: Any, tenant: str = "a", answer: Any = None) -> tuple[threading.Thread, list[Any]]:
    """A call under `dl` running `body` in a thread of its own; what it ended with lands in the list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            with dl.call("iid", "Busy-v0", tenant, answer):
                body()
            outcome.append("returned")
        except GymServeError as err:
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def watch_until(dl: Deadlines, done: Any, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not done() and time.monotonic() < end:
        dl.check(time.monotonic())
        time.sleep(0.02)


def test_a_python_busy_loop_is_stopped_at_its_deadline_answered_504_and_its_env_quarantined() -> None:
    dl = make()
    quarantined: list[str] = []
    answered: list[GymServeError] = []
    dl.quarantine = quarantined.append

    def busy() -> None:
        while True:
            pass

    thread, outcome = in_thread(dl, busy, answer=answered.append)
    watch_until(dl, lambda: not thread.is_alive())
    assert not thread.is_alive()  # stopped: the thread is free again
    assert isinstance(outcome[0], StepTimeout) and outcome[0].status == 504 and outcome[0].code == "step_timeout"
    assert outcome[0].fault == "env" and not outcome[0].retryable
    assert quarantined == ["iid"] and [e.code for e in answered] == ["step_timeout"]
    assert dl.stuck == 0


def test_a_loop_that_swallows_exceptions_still_stops_and_a_fast_call_is_never_touched() -> None:
    dl = make()

    def swallowing() -> None:
        while True:
            with contextlib.suppress(Exception):  # env code like this does not catch the watchdog's BaseException
                time.sleep(0.001)

    thread, outcome = in_thread(dl, swallowing)
    watch_until(dl, lambda: not thread.is_alive())
    assert isinstance(outcome[0], StepTimeout)
    fast, fast_outcome = in_thread(dl, lambda: None)
    fast.join(1)
    dl.check(time.monotonic() + 10)  # long after: nothing of the fast call is left to end
    assert fast_outcome == ["returned"]


def test_a_sleep_cannot_be_stopped_its_caller_is_answered_anyway_and_it_is_written_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deadlines, "WRITE_OFF_SECONDS", 0.1)
    dl = make(max_stuck_threads=0)
    answered: list[GymServeError] = []
    replaced = threading.Event()
    spares: list[int] = []
    dl.too_many_stuck = replaced.set
    dl.spares = spares.append
    release = threading.Event()
    thread, outcome = in_thread(dl, lambda: release.wait(30), answer=answered.append)  # blocked in C, like a sleep
    watch_until(dl, replaced.is_set)
    assert [e.code for e in answered] == ["step_timeout"]  # in time, while the thread is still stuck
    assert thread.is_alive() and dl.stuck == 1 and replaced.is_set()  # written off: one over the limit of 0
    release.set()  # it came back at last: the interrupt raised then ends it as the timeout it was
    thread.join(5)
    assert isinstance(outcome[0], StepTimeout) and dl.stuck == 0
    assert spares[-1] == 0  # its spare thread given back


def test_slow_calls_get_spare_threads_and_one_tenant_only_its_share() -> None:
    dl = make(shared=True, step_timeout_seconds=60)  # 4 threads, a share of 0.5: 2 slow calls per tenant
    spares: list[int] = []
    dl.spares = spares.append
    release = threading.Event()
    slow = [in_thread(dl, lambda: release.wait(30), tenant="a")[0] for _ in range(2)]
    time.sleep(0.05)
    dl.check(time.monotonic() + deadlines.SLOW_SECONDS)
    assert spares[-1] == 2
    with pytest.raises(TenantBusy) as refused, dl.call("other", "Busy-v0", "a", None):
        pass
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
    with dl.call("theirs", "Busy-v0", "b", None):  # another tenant's calls go on
        pass
    release.set()
    for thread in slow:
        thread.join(5)
    assert spares[-1] == 0
    with dl.call("other", "Busy-v0", "a", None):  # its slow calls are over: its share is free again
        pass


def test_an_open_server_has_one_tenant_and_no_share() -> None:
    dl = make(shared=False)
    assert dl.share is None


def test_deadlines_by_env_id_and_a_bad_entry_names_the_setting() -> None:
    settings = Settings(step_timeout_seconds=30, step_timeout_overrides="ALE/*=60;Ant-v5=10")
    assert settings.step_timeout("ALE/Pong-v5") == 60
    assert settings.step_timeout("Ant-v5") == 10
    assert settings.step_timeout("CartPole-v1") == 30
    for bad in ("Ant-v5=0", "Ant-v5=1,2", "Ant-v5", "Ant-v5=soon"):
        with pytest.raises(SettingsError, match="GYMSERVE_STEP_TIMEOUT_OVERRIDES"):
            Settings(step_timeout_overrides=bad)
    with pytest.raises(SettingsError, match="GYMSERVE_TENANT_THREAD_SHARE"):
        Settings(tenant_thread_share=2)


def test_a_thread_waiting_on_another_workers_call_gets_a_spare_but_no_deadline_and_counts_in_the_share() -> None:
    dl = make(shared=True, step_timeout_seconds=0.2)  # 4 threads, a share of 2
    spares: list[int] = []
    dl.spares = spares.append
    release, outcome = threading.Event(), []

    def wait() -> None:
        with dl.waiting("theirs", "a"):
            release.wait(30)
        outcome.append("returned")

    waiters = [threading.Thread(target=wait, daemon=True) for _ in range(2)]
    for thread in waiters:
        thread.start()
    time.sleep(0.05)
    dl.check(time.monotonic() + 3600)  # long past any deadline: the owner keeps it, not this worker
    assert spares[-1] == 2 and not outcome
    with pytest.raises(TenantBusy):
        dl.admit("a")
    release.set()
    for thread in waiters:
        thread.join(5)
    assert outcome == ["returned", "returned"] and spares[-1] == 0
    dl.admit("a")
