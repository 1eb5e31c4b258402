"""The one ownership decision: every branch of `resolve`, seen from worker slot 1, generation 4, of node "a"."""

from __future__ import annotations

import pytest

from gymserve.routing.ids import IdMinter, Owner
from gymserve.routing.resolve import Resolution, Where, resolve

ME = Owner("a", 1, 4)


def minted(node: str = "a", slot: int = 1, generation: int = 4) -> str:
    return IdMinter(Owner(node, slot, generation)).mint()


@pytest.mark.parametrize("can_forward", [True, False])
def test_my_own_id_is_local(can_forward: bool) -> None:
    assert resolve(ME, minted(), can_forward) == Resolution(Where.LOCAL, ME)


@pytest.mark.parametrize("generation", [3, 0, 5], ids=["older", "first", "newer"])
@pytest.mark.parametrize("can_forward", [True, False])
def test_another_generation_of_my_slot_is_lost_never_mine(generation: int, can_forward: bool) -> None:
    """The worker that minted it died and this one replaced it: its envs died with it."""
    assert resolve(ME, minted(generation=generation), can_forward) == Resolution(Where.LOST, Owner("a", 1, generation))


def test_a_siblings_id_is_forwarded_when_this_worker_can_forward() -> None:
    assert resolve(ME, minted(slot=2, generation=9), True) == Resolution(Where.SIBLING, Owner("a", 2, 9))


def test_a_siblings_id_is_lost_when_this_worker_cannot_forward() -> None:
    """No siblings (a standalone worker) or a request that already took its one hop."""
    assert resolve(ME, minted(slot=0, generation=4), False) == Resolution(Where.LOST, Owner("a", 0, 4))


@pytest.mark.parametrize("can_forward", [True, False])
@pytest.mark.parametrize("owner", [Owner("b", 1, 4), Owner("b", 2, 0), Owner("a-2", 1, 4)])
def test_another_nodes_id_is_elsewhere_even_when_slot_and_generation_match(owner: Owner, can_forward: bool) -> None:
    assert resolve(ME, minted(*owner), can_forward) == Resolution(Where.ELSEWHERE, owner)


@pytest.mark.parametrize(
    "garbage",
    ["", "1", "CartPole-v1", "a.1-4", "a.1-4." + "0" * 31, "A.1-4." + "0" * 32, "a.1-4." + "0" * 32 + "/x"],
)
def test_anything_not_shaped_like_an_id_is_unknown(garbage: str) -> None:
    assert resolve(ME, garbage, True) == Resolution(Where.UNKNOWN, None)
