"""Community ID against the test vectors of Corelight's specification."""

from __future__ import annotations

import ipaddress

import pytest

from appliance.inspect.communityid import community_id


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


A, B = ip("1.2.3.4"), ip("5.6.7.8")
V6A = ip("fe80:0001:0203:0405:0607:0809:0A0B:0C0D")
V6B = ip("fe80:1011:1213:1415:1617:1819:1A1B:1C1D")


@pytest.mark.parametrize(
    ("args", "seed", "expected"),
    [
        ((A, B, 6, 1122, 3344), 0, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
        ((B, A, 6, 3344, 1122), 0, "1:wCb3OG7yAFWelaUydu0D+125CLM="),
        ((A, B, 17, 1122, 3344), 0, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
        ((B, A, 17, 3344, 1122), 0, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg="),
        ((A, B, 6, 1122, 3344), 1, "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
        ((A, B, 17, 1122, 3344), 1, "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
        ((A, B, 46), 0, "1:ikv3kmf89luf73WPz1jOs49S768="),
    ],
)
def test_vectors(args: tuple[object, ...], seed: int, expected: str) -> None:
    assert community_id(*args, seed=seed) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("src", "dst", "proto", "icmp_type", "seed", "expected"),
    [
        (A, B, 1, 8, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="),
        (B, A, 1, 0, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0="),
        (A, B, 1, 8, 1, "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
        (V6A, V6B, 58, 128, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="),
        (V6B, V6A, 58, 129, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo="),
        (V6A, V6B, 58, 128, 1, "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
    ],
)
def test_icmp_request_and_reply_are_one_flow(
    src: bytes, dst: bytes, proto: int, icmp_type: int, seed: int, expected: str
) -> None:
    got = community_id(src, dst, proto, seed=seed, icmp_type=icmp_type, icmp_code=0)
    assert got == expected
