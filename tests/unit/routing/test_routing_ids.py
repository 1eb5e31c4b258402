"""Instance ids: what a worker mints parses back to it, and nothing but that exact shape parses at all."""

from __future__ import annotations

import re

import pytest

from gymserve.routing import ids
from gymserve.routing.ids import MAX_ID_LENGTH, IdMinter, Owner

TOKEN = "0123456789abcdef0123456789abcdef"


def test_a_minted_id_names_its_owner_and_has_the_documented_shape() -> None:
    owner = Owner("gymserve-0", 12, 345)
    instance_id = IdMinter(owner).mint()
    assert re.fullmatch(r"gymserve-0\.12-345\.[0-9a-f]{32}", instance_id)
    assert ids.parse(instance_id) == owner


def test_minted_ids_carry_128_random_bits() -> None:
    """Every one of the token's 128 bits takes both values over a few hundred ids (a constant bit: 2**-299)."""
    tokens = [int(IdMinter(Owner("n", 0, 0)).mint().rsplit(".", 1)[1], 16) for _ in range(300)]
    assert len(set(tokens)) == len(tokens)
    ones = 0
    zeros = 0
    for token in tokens:
        ones |= token
        zeros |= ~token & (2**128 - 1)
    assert ones == zeros == 2**128 - 1


def test_the_longest_well_formed_id_fits_the_length_cap() -> None:
    node = "a" * 63
    longest = f"{node}.999-999999999.{TOKEN}"
    assert len(longest) == MAX_ID_LENGTH
    assert ids.parse(longest) == Owner(node, 999, 999_999_999)


def test_ids_longer_than_the_cap_are_refused_before_the_pattern_sees_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids come from URLs of any length: the cap keeps a megabyte of text away from the regex."""
    assert ids.parse("a" * 64 + f".1-1.{TOKEN}") is None

    class NoScan:
        def fullmatch(self, text: str) -> None:
            raise AssertionError(f"scanned {len(text)} characters")

    monkeypatch.setattr(ids, "_ID_RE", NoScan())
    assert ids.parse("a" * 1_000_000) is None
    assert ids.parse("a" * (MAX_ID_LENGTH + 1)) is None


@pytest.mark.parametrize(
    "forged",
    [
        "",
        f"../../etc/passwd.1-1.{TOKEN}",
        f"node/x.1-1.{TOKEN}",
        f"node.1-1.{TOKEN}/step",
        f"node.1-1.{TOKEN}?a=b",
        f"evil.example.com.1-1.{TOKEN}",
        f"10.0.0.1:8080.1-1.{TOKEN}",
        f"node:80.1-1.{TOKEN}",
        f"node.1-1.{TOKEN}:80",
        f"Node.1-1.{TOKEN}",
        f"node.1-1.{TOKEN.upper()}",
        f"-node.1-1.{TOKEN}",
        f"node-.1-1.{TOKEN}",
        f"node_1.1-1.{TOKEN}",
        f"node.1_1.{TOKEN}",
        f"node.1-1-{TOKEN}",
        f"node-1-1.{TOKEN}",
        f"node.1.1.{TOKEN}",
        f"node.1234-1.{TOKEN}",
        f"node.1-1234567890.{TOKEN}",
        f"node.-1-1.{TOKEN}",
        f"node.1-1.{TOKEN[:-1]}",
        f"node.1-1.{TOKEN}0",
        f"node.1-1.{TOKEN[:-1]}g",
        f"node.\u0661-1.{TOKEN}",  # an Arabic-Indic digit: str.isdigit says yes, the pattern must not
        f" node.1-1.{TOKEN}",
        f"node.1-1.{TOKEN}\n",
        f"node.1-1.{TOKEN}%00",
        f"node%2e1-1.{TOKEN}",
    ],
)
def test_forged_ids_are_refused(forged: str) -> None:
    assert ids.parse(forged) is None


def test_slot_and_generation_are_read_as_numbers() -> None:
    assert ids.parse(f"n.007-0010.{TOKEN}") == Owner("n", 7, 10)
