"""PCRE's \\g back references written as Python's re writes them; the forms it cannot run stay
refused."""

from __future__ import annotations

import re

import pytest

from appliance.inspect.backrefs import write_backrefs
from appliance.inspect.rules import parse_pcre


@pytest.mark.parametrize(
    ("pattern", "written"),
    [
        (r"(a)\g{1}", r"(a)(?:\1)"),
        (r"(a)\g1", r"(a)(?:\1)"),
        (r"(a)\g{1}0", r"(a)(?:\1)0"),  # the digit after it is not part of the number
        (r"(a)(b)\g{-1}", r"(a)(b)(?:\2)"),
        (r"(a)(b)\g-2", r"(a)(b)(?:\1)"),
        (r"(a)\g{-1}(b)\g{-1}", r"(a)(?:\1)(b)(?:\2)"),  # relative to where it stands
        (r"(?P<x>a)\g{x}", r"(?P<x>a)(?P=x)"),
        (r"(?:a)(?<=a)(?=b)(?i:c)(b)\g{-1}", r"(?:a)(?<=a)(?=b)(?i:c)(b)(?:\1)"),
        (r"(?#(x))(b)\g{-1}", r"(?#(x))(b)(?:\1)"),  # a comment's ( opens no group
        (r"[(](b)\g{-1}", r"[(](b)(?:\1)"),  # nor one in a class
        (r"\((b)\g{-1}", r"\((b)(?:\1)"),  # nor an escaped one
        (r"\\g{1}", r"\\g{1}"),  # an escaped backslash, then g
        (r"(a)[\g{1}]", r"(a)[\g{1}]"),  # in a class: left to the compiler
        (r"(a)\g<1>", r"(a)\g<1>"),  # subroutine calls: left, refused
        (r"(a)\g'1'", r"(a)\g'1'"),
        (r"(a)\g{0}", r"(a)\g{0}"),
        (r"(a)\g{-2}", r"(a)\g{-2}"),  # before the first group
        (r"(a)\g{100}", r"(a)\g{100}"),
        ("(a)\\g" + "9" * 5000, "(a)\\g" + "9" * 5000),
    ],
)
def test_written(pattern: str, written: str) -> None:
    assert write_backrefs(pattern) == written


def test_a_comment_under_the_x_flag_opens_no_group() -> None:
    pattern = "(a) # (x)\n(b)\\g{-1}"
    assert write_backrefs(pattern, verbose=True) == "(a) # (x)\n(b)(?:\\2)"
    assert write_backrefs(pattern) == "(a) # (x)\n(b)(?:\\3)"


SELF_SIGNED = (
    r'"/^.\x31.\x30.\x06\x03\x55\x04\x03\x0C.([a-z]{2,9})\x30.\x17\x0D[0-9]{12}Z\x17\x0D'
    r'[0-9]{12}Z\x30.\x31.\x30.\x06\x03\x55\x04\x03\x0C.\g{1}\x30\x82../Rs"'
)


def name(cn: bytes) -> bytes:
    return b"\x30\x31\x0b\x30\x09\x06\x03\x55\x04\x03\x0c" + bytes([len(cn)]) + cn


def test_the_et_rule_finds_an_issuer_repeated_as_the_subject() -> None:
    regex, _, relative, _ = parse_pcre(SELF_SIGNED)
    assert relative
    validity = b"\x30\x1e\x17\x0d" + b"240101000000Z" + b"\x17\x0d" + b"250101000000Z"
    issuer = name(b"abcdef")
    same = issuer + validity + b"\x30\x0d" + issuer[1:] + b"\x30\x82\x01\x22"
    other = issuer + validity + b"\x30\x0d" + name(b"abcdeg")[1:] + b"\x30\x82\x01\x22"
    assert regex.search(same) is not None
    assert regex.search(other) is None


@pytest.mark.parametrize("pcre", [r'"/(a)\g<1>/"', r'"/(a)\g{-2}/"', r'"/(a)\g{2}/"'])
def test_what_python_cannot_run_is_still_refused(pcre: str) -> None:
    with pytest.raises(ValueError):
        parse_pcre(pcre)


def test_the_same_matches_as_a_numbered_reference() -> None:
    for pcre, plain in [
        (r'"/(\w+) \g{1}/i"', r"(\w+) \1"),
        (r'"/(\w)(\w)\g{-1}\g{-2}/"', r"(\w)(\w)\2\1"),
    ]:
        regex, _, _, _ = parse_pcre(pcre)
        flags = regex.flags & re.IGNORECASE
        for text in [b"abba", b"ab ab", b"AB ab", b"abab", b"xyyx", b"hello HELLO"]:
            expected = re.compile(plain.encode(), flags).search(text)
            found = regex.search(text)
            assert (found and found.span()) == (expected and expected.span()), (pcre, text)
