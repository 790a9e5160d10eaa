"""Log lines: JSON, with the syslog priority in front only when stderr is the journal."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest

from appliance.daemon.jsonlog import JsonFormatter, is_journal, priority, setup_logging


def record(level: int, message: str = "it happened") -> logging.LogRecord:
    return logging.LogRecord("appliance", level, __file__, 1, message, (), None)


def test_levels_map_to_syslog_priorities() -> None:
    assert [priority(level) for level in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]
    assert priority(35) == 4  # between warning and error: the less severe
    assert priority(5) == 7


def test_journal_lines_carry_their_priority() -> None:
    line = JsonFormatter(journal=True).format(record(logging.ERROR, "apply refused"))
    assert line.startswith("<3>{")
    assert json.loads(line[3:])["msg"] == "apply refused"
    info = JsonFormatter(journal=True).format(record(logging.INFO))
    assert info.startswith("<6>{")


def test_other_lines_stay_plain_json() -> None:
    line = JsonFormatter().format(record(logging.ERROR))
    assert json.loads(line)["level"] == "error"


def test_the_journal_is_recognised_by_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        info = os.fstat(stream.fileno())
        assert is_journal(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        assert not is_journal(stream, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
        assert not is_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not is_journal(stream, {})
    assert not is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no file behind it


def test_setup_logging_prefixes_when_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = logging.getLogger("appliance")
    saved = (shared.handlers[:], shared.level, shared.propagate)
    try:
        with open(tmp_path / "journal", "w+") as stream:
            info = os.fstat(stream.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
            logger = setup_logging(stream)
            logger.error("refused", extra={"policy": "p"})
            logger.warning("drift")
            stream.seek(0)
            lines = stream.read().splitlines()
    finally:
        shared.handlers[:], shared.level, shared.propagate = saved
    assert [line[:3] for line in lines] == ["<3>", "<4>"]
    assert json.loads(lines[0][3:])["policy"] == "p"
