"""The compiled splice built with the guest's own toolchain (Debian's gcc, amd64 and arm64)
and held equal to its Python twin there. The guest image has gcc only when built with
``APPLIANCE_GUEST_CORE=1`` (qemu/build-image.sh); without it this test is skipped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from appliance.model import splice
from tests.compiled_build import build_with_gcc

SOURCE = Path(splice.__file__).with_name("_splice.c")
NAME = "appliance.model._splice"


@pytest.mark.guest
def test_builds_without_warnings_and_agrees_with_its_twin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = build_with_gcc(SOURCE, NAME, tmp_path)
    monkeypatch.setitem(sys.modules, NAME, module)
    monkeypatch.delenv(splice.ENV, raising=False)
    assert splice.compiled() is module

    from tests.model import test_splice_compiled as held

    held.test_a_large_splice_as_the_twin()
    held.test_many_lines_as_the_twin()
    held.test_differ_lines_reads_addresses_as_inet_pton_does()
    held.test_splice_words_as_the_twin()
    held.test_differ_lines_as_the_twin()
    held.test_differ_lines_on_any_bytes_as_the_twin()
    held.test_splice_words_refuses_what_is_not_words()
    held.test_a_large_value_diff_as_the_twin()
    held.test_differ_values_as_the_twin()
    held.test_differ_values_refuses_malformed_input()
    held.test_differ_values_names_what_is_malformed()
    held.test_a_diff_with_the_compiled_splice_is_the_twin_s(monkeypatch)
