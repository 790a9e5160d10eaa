"""Fixtures for the integration tests: a lab per test module, removed when the module ends
(also when a test fails)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.labtools import Lab, lab_fixture


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    tag = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    yield from lab_fixture(tag)
