"""The quota store's circuit breaker, on a clock the test moves."""

from __future__ import annotations

from gymserve.tenancy.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_opens_it_then_one_trial_closes_or_reopens_it() -> None:
    clock = Clock()
    breaker = Breaker(5.0, clock)
    assert breaker.allow() and breaker.allow()  # closed: everyone calls
    breaker.failed()
    assert not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one, while it runs
    breaker.failed()
    assert not breaker.allow()
    clock.now += 5.1
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.allow() and breaker.allow() and not breaker.is_open
