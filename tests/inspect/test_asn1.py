"""asn1: BER objects decoded and checked as Suricata does, in rules and on crafted traffic."""

from __future__ import annotations

import pytest
from scapy.all import IP, UDP, Ether  # type: ignore[attr-defined]

from appliance.errors import RuleFileError
from appliance.inspect.asn1 import asn1_holds, parse_asn1
from appliance.inspect.rules import Variables, parse_rules
from tests.inspect.traffic import inspect, sids

# X.690's example (A.3): a constructed object of 133 bytes of content
A3 = (
    b"\x60\x81\x85\x61\x10\x1a\x04John\x1a\x01P\x1a\x05Smith\xa0\x0a\x1a\x08Director"
    b"\x42\x01\x33\xa1\x0a\x43\x0819710917\xa2\x12\x61\x10\x1a\x04Mary\x1a\x01T\x1a\x05"
    b"Smith\xa3\x42\x31\x1f\x61\x11\x1a\x05Ralph\x1a\x01T\x1a\x05Smith\xa0\x0a\x43\x08"
    b"19571111\x31\x1f\x61\x11\x1a\x05Susan\x1a\x01B\x1a\x05Jones\xa0\x0a\x43\x0819590717"
)
REAL = bytes([0x09, 0x82, 0x01, 0x01]) + b"\x05" * 257  # a REAL of 257 bytes, decimal form


@pytest.mark.parametrize(
    ("options", "data", "expected"),
    [
        ("oversize_length 132, absolute_offset 0", A3, True),
        ("oversize_length 133, absolute_offset 0", A3, False),
        ("oversize_length 20, absolute_offset 0", A3, True),  # an object inside it
        ("oversize_length 132", A3[:-1], False),  # cut short: not decoded
        ("bitstring_overflow, absolute_offset 0", b"\x03\x01\xff", True),
        ("bitstring_overflow, absolute_offset 0", b"\x03\x01\x07", False),
        ("double_overflow, absolute_offset 0", REAL, True),
        ("double_overflow, absolute_offset 0", REAL[:3] + b"\x00" + REAL[4:-1], False),
        ("oversize_length 1, absolute_offset 3", b"xyz\x04\x02ab", True),
        ("oversize_length 1, absolute_offset 9", b"xyz\x04\x02ab", False),  # past the end
        ("oversize_length 1, max_frames 2", b"\x05\x00\x05\x00\x04\x02ab", False),
        ("oversize_length 1, max_frames 3", b"\x05\x00\x05\x00\x04\x02ab", True),
        # more objects than max_frames: none decoded, even one that fails a check before
        ("oversize_length 1, max_frames 2", b"\x04\x02ab\x05\x00\x05\x00", False),
        # a malformed object ends the reading: the ones before it are checked
        ("oversize_length 1", b"\x04\x02ab\x1f", True),
    ],
)
def test_checks(options: str, data: bytes, expected: bool) -> None:
    check, offset, _ = parse_asn1(options)
    assert asn1_holds(check, data, offset or 0) is expected


@pytest.mark.parametrize(
    "value",
    ["", "frob", "oversize_length x", "absolute_offset 1", "absolute_offset 1, relative_offset 1"],
)
def test_bad_options_are_refused_with_the_line(value: str) -> None:
    text = f'alert udp any any -> any any (msg:"x"; asn1:{value}; sid:9;)'
    with pytest.raises(RuleFileError, match=r"a\.rules:1: .*asn1"):
        list(parse_rules(text, "a.rules", Variables.from_networks(None)))


def test_the_kerberos_principal_rule_on_traffic() -> None:
    rule = (
        'alert udp any any -> any 88 (msg:"principal name overflow"; content:"j"; depth:1; '
        'content:"|01 A1|"; asn1:oversize_length 1024,relative_offset -1; sid:2102578;)'
    )

    def request(length: int) -> list:  # type: ignore[type-arg]
        body = b"\xa1\x82" + length.to_bytes(2, "big") + b"\x04" * length
        payload = b"j\x00\x00\x00\x01" + body
        return [
            Ether() / IP(src="198.51.100.7", dst="10.0.0.88") / UDP(sport=40000, dport=88) / payload
        ]

    assert sids(inspect(request(1500), rule)) == [2102578]
    assert sids(inspect(request(1000), rule)) == []
