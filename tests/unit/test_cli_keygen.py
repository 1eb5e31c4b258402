"""`gymserve keygen PATH`: a random farm key written once (mode 0600), never replaced, readable by the Sealer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gymserve.cli import main
from gymserve.lifecycle.copies import KEY_VARIABLE, MIN_KEY_LENGTH, Sealer


def test_keygen_writes_a_private_random_key_that_the_sealer_reads(tmp_path: Path) -> None:
    path = tmp_path / "key"
    assert main(["keygen", str(path)]) == 0
    key = path.read_text().strip()
    assert len(key) >= MIN_KEY_LENGTH and int(key, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Sealer.from_environ(1 << 20, {KEY_VARIABLE + "_FILE": str(path)}).enabled
    assert os.listdir(tmp_path) == ["key"], "no temporary file stays"


def test_keygen_keeps_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    assert main(["keygen", str(path)]) == 0
    first = path.read_bytes()
    assert main(["keygen", str(path)]) == 0
    assert path.read_bytes() == first
    assert main(["keygen", str(tmp_path / "other")]) == 0
    assert (tmp_path / "other").read_bytes() != first, "each farm its own key"


def test_keygen_into_a_directory_it_cannot_write_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", str(tmp_path / "missing" / "key")]) == 1
    assert "cannot write the key" in capsys.readouterr().err


def test_keygen_can_write_a_secret_another_container_reads_through_its_group(tmp_path: Path) -> None:
    path = tmp_path / "store-password"
    assert main(["keygen", "--group-readable", str(path)]) == 0
    assert path.stat().st_mode & 0o777 == 0o640 and len(path.read_text().strip()) == 64
