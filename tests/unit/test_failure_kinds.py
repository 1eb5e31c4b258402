"""Failure kinds: every error answer says whose failure it is and whether a retry can help, decided per error class."""

from __future__ import annotations

from typing import Any

import pytest

from gymserve import errors
from gymserve.client.errors import RemoteError
from gymserve.client.http import Reply


@pytest.mark.parametrize(
    ("err", "fault", "retryable"),
    [
        (errors.InvalidValue("seq", "bad"), "client", False),
        (errors.UnknownInstance("x"), "client", False),
        (errors.EnvFailed("the env raised"), "env", False),
        (errors.InstanceLost("x"), "infrastructure", False),
        (errors.OwnerTimeout("slow"), "infrastructure", True),
        (errors.CapacityExceeded("full", retry_after=1), "infrastructure", True),
        (errors.Draining("draining", retry_after=1), "infrastructure", True),
        (errors.Internal(), "infrastructure", False),
        (errors.RoutingError(404, "not_found", "no such route"), "client", False),
    ],
)
def test_each_error_class_decides_its_fault_and_retryable_for_both_apis(
    err: errors.GymServeError, fault: str, retryable: bool
) -> None:
    v2 = errors.error_body(err, native=True)["error"]
    v1 = errors.error_body(err, native=False)
    assert (v2["fault"], v2["retryable"]) == (fault, retryable)
    assert (v1["fault"], v1["retryable"]) == (fault, retryable)
    assert v1["message"] == err.message  # the seed's field stays; the kinds are additive
    if not isinstance(err, errors.RoutingError):  # its codes are the router's (not_found, method_not_allowed)
        assert errors.kinds()[err.code] == (fault, retryable)


def test_the_flask_app_answers_carry_the_kinds(client: Any) -> None:
    resp = client.post("/v2/envs", json={"env_id": "CartPole-v1", "ttl": -1})
    assert resp.status_code == 422
    assert resp.json["error"]["fault"] == "client" and resp.json["error"]["retryable"] is False
    resp = client.post("/v1/envs/", json={"env_id": "NoSuchEnv-v0"})
    assert resp.json["fault"] == "client" and resp.json["retryable"] is False


def test_remote_error_exposes_the_kinds_and_guesses_them_from_the_status_when_absent() -> None:
    body = (
        b'{"error": {"code": "owner_timeout", "message": "slow", "details": {}, '
        b'"fault": "infrastructure", "retryable": true}}'
    )
    with pytest.raises(RemoteError) as caught:
        Reply(504, {"Content-Type": "application/json"}, body).checked()
    assert (caught.value.fault, caught.value.retryable, caught.value.code) == ("infrastructure", True, "owner_timeout")
    with pytest.raises(RemoteError) as caught:
        Reply(502, {}, b"<html>bad gateway</html>").checked()
    assert (caught.value.fault, caught.value.retryable) == ("infrastructure", True)
    with pytest.raises(RemoteError) as caught:
        Reply(404, {}, b'{"message": "Instance_id x unknown"}').checked()
    assert (caught.value.fault, caught.value.retryable) == ("client", False)
