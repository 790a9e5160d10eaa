"""PCRE forms written as Python's re writes them, and what stays refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.inspect.pcrecompat import compile_pcre


@pytest.mark.parametrize(
    ("pattern", "data", "found"),
    [
        # named groups and references to them, in PCRE's forms
        (r"(?<word>[a-z]+)=\k<word>", b"ab=ab", b"ab=ab"),
        (r"(?'word'[a-z]+)=\k'word'", b"xy=xy", b"xy=xy"),
        (r"(?<word>[a-z]+)=\k{word}", b"q=q", b"q=q"),
        (r"(?P<word>[a-z]+)=(?P=word)", b"k=k", b"k=k"),
        # one hex digit, and the braced form, in and out of a class
        (r"[\x22\x2]+", b"\x02\x22\x02", b"\x02\x22\x02"),
        (r"a\x9z", b"a\x09z", b"a\x09z"),
        (r"a\x9b", b"a\x9b", b"a\x9b"),  # two digits: as it is
        (r"\x{41}\x{7}", b"A\x07", b"A\x07"),
        # not rewritten: an escaped backslash before x2, look-behinds, a class of ( ? <
        (r"\\x2", b"\\x2", b"\\x2"),
        (r"(?<=a)b(?<!c)", b"ab", b"b"),
        (r"[(?<]+n", b"(?<n", b"(?<n"),
    ],
)
def test_pcre_forms_run_as_pcre_runs_them(pattern: str, data: bytes, found: bytes) -> None:
    match = compile_pcre(pattern).search(data)
    assert match is not None and match.group() == found


def test_a_named_reference_with_a_number_after_it_and_groups_still_counted() -> None:
    regex = compile_pcre(r"(?<a>x)(y)\g{2}\k<a>1")
    assert regex.search(b"xyyx1") is not None
    assert regex.search(b"xyyx2") is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"\x{100}", "not a supported expression"),
        (r"(?<a>x)\g<a>", "PCRE construct"),
        (r"(?|(a)|(b))", "PCRE construct"),
        (r"(?<=a+)b", "look-behind of variable width"),
    ],
)
def test_what_re_cannot_run_the_same_way_is_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_pcre(pattern)


def test_a_nested_set_loads_without_a_warning() -> None:
    """re's notice of a possible nested set ([[ in a class) is not printed by a load."""
    code = (
        "from appliance.inspect.pcrecompat import compile_pcre\n"
        "assert compile_pcre('[[c]+x').search(b'[cx') is not None"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stderr == ""
