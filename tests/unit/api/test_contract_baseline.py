"""tests/contract/baseline.json: the Schemathesis failures the contract stage accepts (scripts/test-contract.sh)."""

from __future__ import annotations

import json
from pathlib import Path

from gymserve.api.openapi import DOCUMENT

BASELINE = Path(__file__).resolve().parents[2] / "contract" / "baseline.json"


def test_every_accepted_failure_names_an_operation_of_the_document_and_says_why() -> None:
    entries = json.loads(BASELINE.read_text())["entries"]
    operations = {f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item}
    for entry in entries:
        assert entry["operation"] in operations, entry
        assert len(entry.get("reason", "")) > 40, f"{entry['id']} ({entry['operation']}) needs its reason"
    assert len({(e["operation"], e["check"], e["signature"]) for e in entries}) == len(entries)
