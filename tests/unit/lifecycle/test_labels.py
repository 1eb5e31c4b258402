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


@pytest.mark.parametrize(
    "given", [["run"], ["=x"], ["run=a b"], ["bad key=x"], ["run=a", "run=b"], [f"k{i}=v" for i in range(17)]]
)
def test_a_bad_selector_is_422_naming_label(given: list[str]) -> None:
    with pytest.raises(InvalidValue) as err:
        selector(given)
    assert err.value.status == 422 and err.value.details["field"] == "label"
