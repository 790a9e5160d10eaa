"""Which ``nft monitor`` transactions hint at drift. Pure."""

from __future__ import annotations

import pytest

from appliance.daemon.monitor import foreign_drift

OWN = 100


@pytest.mark.parametrize(
    ("events", "pid", "expected"),
    [
        (["delete rule inet appliance input handle 69"], 200, True),
        (["delete rule inet appliance input handle 69"], OWN, False),
        (["delete table inet appliance"], 200, True),
        (["add rule inet appliance input tcp dport 4444 accept"], 200, True),
        (["delete element inet appliance blocklist { 10.0.0.1 }"], 200, True),
        (["add element inet appliance blocklist { 10.9.9.9 }"], 200, False),
        (["add rule inet other input accept"], 200, False),
        (["delete table inet appliance2"], 200, False),
        (["add rule ip appliance input accept"], 200, False),
        ([], 200, False),
    ],
)
def test_foreign_drift(events: list[str], pid: int, expected: bool) -> None:
    assert foreign_drift(events, pid, OWN) is expected
