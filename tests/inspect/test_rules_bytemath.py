"""byte_math: its result is a rule variable, read by byte_test, byte_jump, isdataat and the
content placements as byte_extract's are; what it refuses."""

from __future__ import annotations

import ipaddress

import pytest

from appliance.errors import RuleFileError
from appliance.inspect.match import contents_match
from appliance.inspect.rules import Signature, Variables, parse_rules
from tests.inspect.traffic import inspect, sids, tcp_session

VARS = Variables.from_networks([ipaddress.ip_network("10.0.0.0/8")])


def rule(options: str) -> Signature:
    return next(parse_rules(f"alert tcp any any -> any any ({options} sid:1;)", "t", VARS))


def hits(options: str, data: bytes) -> bool:
    return contents_match(rule(options), {"pkt": data})


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        # each operator; the result tested with byte_test against the bytes after
        (
            "byte_math:bytes 1, offset 0, oper +, rvalue 2, result r; byte_test:1,=,r,1;",
            b"\x05\x07",
            True,
        ),
        (
            "byte_math:bytes 1, offset 0, oper +, rvalue 2, result r; byte_test:1,=,r,1;",
            b"\x05\x06",
            False,
        ),
        (
            "byte_math:bytes 1, offset 0, oper -, rvalue 2, result r; byte_test:1,=,r,1;",
            b"\x05\x03",
            True,
        ),
        (
            "byte_math:bytes 1, offset 0, oper *, rvalue 3, result r; byte_test:1,=,r,1;",
            b"\x05\x0f",
            True,
        ),
        (
            "byte_math:bytes 1, offset 0, oper /, rvalue 2, result r; byte_test:1,=,r,1;",
            b"\x05\x02",
            True,
        ),
        (
            "byte_math:bytes 1, offset 0, oper <<, rvalue 4, result r; byte_test:1,=,r,1;",
            b"\x05\x50",
            True,
        ),
        (
            "byte_math:bytes 1, offset 0, oper >>, rvalue 1, result r; byte_test:1,=,r,1;",
            b"\x05\x02",
            True,
        ),
        # a division by zero does not match
        (
            "byte_math:bytes 1, offset 0, oper /, rvalue 0, result r; byte_test:1,=,r,1;",
            b"\x05\x00",
            False,
        ),
        # endian, string, bitmask (after the operation, trailing zeros shifted out)
        (
            "byte_math:bytes 2, offset 0, oper +, rvalue 0, result r, endian little; "
            "byte_test:1,=,r,2;",
            b"\x03\x00\x03",
            True,
        ),
        (
            "byte_math:bytes 2, offset 0, oper +, rvalue 1, result r, string dec; "
            "byte_test:1,=,r,2;",
            b"41\x2a",
            True,
        ),
        (
            "byte_math:bytes 2, offset 0, oper +, rvalue 0, result r, string hex; "
            "byte_test:1,=,r,2;",
            b"2a\x2a",
            True,
        ),
        (
            "byte_math:bytes 1, offset 0, oper +, rvalue 0, result r, bitmask 0xf0; "
            "byte_test:1,=,r,1;",
            b"\x5a\x05",
            True,
        ),
        # relative to the previous match; the position moves past the bytes read
        (
            'content:"LEN"; '
            "byte_math:bytes 1, offset 0, oper +, rvalue 1, result r, relative; "
            'content:"X"; distance:r; within:1;',
            b"LEN\x01..X",
            True,
        ),
        (
            'content:"LEN"; '
            "byte_math:bytes 1, offset 0, oper +, rvalue 1, result r, relative; "
            'content:"X"; distance:r; within:1;',
            b"LEN\x01.X.",
            False,
        ),
        # the result as isdataat's, offset's and depth's number, and byte_jump's offset
        (
            'content:"L"; byte_math:bytes 1, offset 0, oper -, rvalue 2, result n, relative; '
            "isdataat:n,relative;",
            b"L\x05abcd",
            True,
        ),
        (
            'content:"L"; byte_math:bytes 1, offset 0, oper -, rvalue 2, result n, relative; '
            "isdataat:n,relative;",
            b"L\x05abc",
            False,
        ),
        (
            'byte_math:bytes 1, offset 0, oper +, rvalue 2, result n; content:"Z"; offset:n; '
            "depth:1;",
            b"\x01..Z",
            True,
        ),
        (
            'byte_math:bytes 1, offset 0, oper +, rvalue 2, result n; content:"Z"; offset:n; '
            "depth:1;",
            b"\x01.Z.",
            False,
        ),
        (
            "byte_math:bytes 1, offset 0, oper +, rvalue 0, result n; byte_jump:1,n; "
            "byte_test:1,=,7,0,relative;",
            b"\x02\x00\x00\x07",
            True,
        ),
        # the rvalue a byte_extract variable
        (
            "byte_extract:1,0,k; byte_math:bytes 1, offset 1, oper *, rvalue k, result r; "
            "byte_test:1,=,r,2;",
            b"\x03\x04\x0c",
            True,
        ),
        (
            "byte_extract:1,0,k; byte_math:bytes 1, offset 1, oper *, rvalue k, result r; "
            "byte_test:1,=,r,2;",
            b"\x03\x04\x0d",
            False,
        ),
        # too short a buffer
        (
            "byte_math:bytes 4, offset 0, oper +, rvalue 1, result r; byte_test:1,=,r,0;",
            b"\x01\x02",
            False,
        ),
    ],
)
def test_byte_math(options: str, data: bytes, expected: bool) -> None:
    assert hits(options, data) is expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("byte_math:bytes 1, offset 0, oper +, rvalue 1;", "missing result"),
        ("byte_math:bytes 1, offset 0, oper %, rvalue 1, result r;", "unknown oper"),
        ("byte_math:bytes 5, offset 0, oper <<, rvalue 1, result r;", "1 to 4"),
        ("byte_math:bytes 9, offset 0, oper +, rvalue 1, result r;", "cannot read 9"),
        ("byte_math:bytes 1, offset 0, oper +, rvalue nope, result r;", "unknown variable"),
        ("byte_math:bytes 1, offset 0, oper +, rvalue 1, result r, dce;", "dce"),
        ("byte_math:bytes 1, offset 0, oper +, rvalue 1, result r, frob 1;", "unknown field"),
        (
            "byte_extract:1,0,r; byte_math:bytes 1, offset 0, oper +, rvalue 1, result r;",
            "defined twice",
        ),
        ("byte_math:bytes 1, offset 0, oper +, rvalue 1, result r, endian middle;", "endian"),
    ],
)
def test_byte_math_refuses_with_a_reason(options: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message):
        rule(options)


def test_byte_math_on_crafted_traffic() -> None:
    """A length field less its header's size: the rule fires only when that many bytes
    follow."""
    rules = (
        'alert tcp any any -> any any (msg:"length"; flow:established,to_server; '
        'content:"LEN"; depth:3; byte_math:bytes 2, offset 0, oper -, rvalue 2, result body, '
        "relative; isdataat:body,relative; sid:1;)\n"
    )
    enough = tcp_session("10.0.0.5", "198.51.100.7", 40001, 9000, [b"LEN\x00\x06abcdef"])
    short = tcp_session("10.0.0.5", "198.51.100.7", 40002, 9000, [b"LEN\x00\x09abcdef"])
    assert sids(inspect(enough + short, rules)) == [1]
