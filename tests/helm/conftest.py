"""Fixtures of the chart tests: one ci/ scenario at a time, and what it renders."""

from __future__ import annotations

import pytest
from helmchart import SCENARIOS, Rendered, render


@pytest.fixture(params=SCENARIOS)
def scenario(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def rendered(scenario: str) -> Rendered:
    return render(scenario)
