"""``appliance run``'s process set-up, without a kernel (no root)."""

from __future__ import annotations

import logging
import sys

import pytest

from appliance.daemon import service


def test_the_loop_gets_the_interpreter_back_within_the_switch_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel worker (a large set parsed or read back) hands the interpreter to the loop
    answering scrapes every SWITCH_SECONDS, not every 5 ms."""
    seen: list[float] = []

    class Stub:
        def __init__(self, *_args: object, **_kwargs: object) -> None:
            pass

        async def run(self) -> int:
            seen.append(sys.getswitchinterval())
            return 0

    monkeypatch.setattr(service, "Daemon", Stub)
    monkeypatch.setattr("appliance.adapters.nft.NftBackend", lambda: None)
    monkeypatch.setattr("appliance.adapters.links.LinkBackend", lambda: None)
    monkeypatch.setattr(
        "appliance.daemon.jsonlog.setup_logging", lambda: logging.getLogger("appliance.test")
    )
    before = sys.getswitchinterval()
    try:
        assert service.run_daemon(service.DaemonConfig("p.toml", "state", "control.sock")) == 0
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(service.SWITCH_SECONDS)]
