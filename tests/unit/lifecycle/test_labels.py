"""Label selectors (?label=key=value): parsed into a map, or a 422 naming `label`; records match all of them."""

from __future__ import annotations

import pytest

from gymserve.errors import InvalidValue
from gymserve.lifecycle.labels import selector
from gymserve.lifecycle.registry import EnvRecord


def test_selectors_are_key_value_pairs_and_all_must_match() -> None:
    chosen = selector(["run=ppo-7", "team.example/role=actor", "empty="])
    assert chosen == {"run": "ppo-7", "team.example/role": "actor", "empty": ""}
    record = EnvRecord("id", "CartPole-v1", None, 0.0, labels={**chosen, "other": "x"})
    assert record.matches(chosen) and record.matches({}) and not record.matches({"run": "ppo-8"})


def test_a_key_given_two_values_is_a_selector_no_env_matches() -> None:
    """Every selector must match: run=a and run=b together match nothing (a valid query, as the OpenAPI says)."""
    chosen = selector(["run=a", "run=b", "team=x"])
    for labels in ({"run": "a", "team": "x"}, {"run": "b", "team": "x"}, {"run": "", "team": "x"}):
        assert not EnvRecord("id", "CartPole-v1", None, 0.0, labels=labels).matches(chosen)
    assert selector(["run=a", "run=a"]) == {"run": "a"}


@pytest.mark.parametrize("given", [["run"], ["=x"], ["run=a b"], ["bad key=x"], [f"k{i}=v" for i in range(17)]])
def test_a_bad_selector_is_422_naming_label(given: list[str]) -> None:
    with pytest.raises(InvalidValue) as err:
        selector(given)
    assert err.value.status == 422 and err.value.details["field"] == "label"


CONTROLS = ["x\n", "x\r\n", "x\x00", "a\tb", "\n", "x\x7f", "x\x1b"]


@pytest.mark.parametrize("bad", CONTROLS)
def test_a_label_with_a_control_character_is_refused_at_create_and_fork_and_in_selectors(client, bad: str) -> None:
    """`$` matched before a trailing newline: "x\\n" was stored, and no selector could ever name it."""
    for labels in ({"run": bad}, {f"run{bad}": "x"}):
        resp = client.post("/v2/envs", json={"env_id": "CartPole-v1", "labels": labels})
        assert resp.status_code == 422 and resp.json["error"]["details"]["field"] == "labels", resp.json
    iid = client.post("/v2/envs", json={"env_id": "CartPole-v1"}).json["instance_id"]
    fork = client.post(f"/v2/envs/{iid}/fork", json={"labels": {"run": bad}})
    assert fork.status_code == 422 and fork.json["error"]["details"]["field"] == "labels"
    for method in (client.get, client.delete):
        for given in (f"run={bad}", f"run{bad}=x"):
            resp = method("/v2/envs", query_string={"label": given})
            assert resp.status_code == 422 and resp.json["error"]["details"]["field"] == "label"
    with pytest.raises(InvalidValue):
        selector([f"run={bad}"])
