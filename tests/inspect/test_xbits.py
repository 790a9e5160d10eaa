"""xbits: bits kept per host or address pair across flows, with their expiry and bound."""

from __future__ import annotations

import pytest

from appliance.errors import RuleFileError
from appliance.inspect.eve import to_eve
from appliance.inspect.rules import Variables, load_rules, parse_rules
from appliance.inspect.xbits import XbitState, parse_xbits
from tests.inspect.traffic import T0, engine, frames, http_get, sids, tcp_session

A, B, C = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", b"\x0a\x00\x00\x03"

RULES = "\n".join(
    [
        'alert http any any -> any any (msg:"stage 1"; flow:established,to_server; '
        'http.uri; content:"/stage1"; xbits:set,ET.s1,track ip_src,expire 10; noalert; sid:1;)',
        'alert http any any -> any any (msg:"stage 2"; flow:established,to_server; '
        'http.uri; content:"/stage2"; xbits:isset,ET.s1,track ip_src; sid:2;)',
        'alert http any any -> any any (msg:"stage 2 alone"; flow:established,to_server; '
        'http.uri; content:"/stage2"; xbits:isnotset,ET.s1,track ip_src; sid:3;)',
        'alert http any any -> any any (msg:"pair"; flow:established,to_server; '
        'http.uri; content:"/pair"; xbits:set,ET.p,track ip_pair; noalert; sid:4;)',
        'alert http any any -> any any (msg:"answer on the pair"; flow:established,to_client; '
        'http.stat_code; content:"404"; xbits:isset,ET.p,track ip_pair; sid:5;)',
        'alert http any any -> any any (msg:"server marked"; flow:established,to_server; '
        'http.uri; content:"/mark"; xbits:set,ET.m,track ip_dst; noalert; sid:6;)',
        'alert http any any -> any any (msg:"from a marked host"; flow:established,to_client; '
        'http.stat_code; content:"404"; xbits:isset,ET.m,track ip_src; sid:7;)',
    ]
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def run(flows: list[tuple[float, list]]) -> list[int]:  # type: ignore[type-arg]
    """The alerts of several flows through one engine, each flow starting at its time."""
    eng = engine(RULES)
    found: list[int] = []
    for start, packets in flows:
        for ts, data, linktype in frames(packets, t0=T0 + start):
            found.extend(sids(to_eve(a) for a in eng.process(ts, data, linktype)))
    return found


def session(client: str, cport: int, uri: str, server: str = "10.0.0.80") -> list:  # type: ignore[type-arg]
    return tcp_session(client, server, cport, 80, [http_get(uri)], [NOT_FOUND])


def test_a_bit_set_on_one_flow_is_seen_on_another_flow_of_the_host() -> None:
    assert run(
        [
            (0, session("198.51.100.7", 40000, "/stage1")),
            (1, session("198.51.100.7", 40001, "/stage2")),
        ]
    ) == [2]


def test_another_host_does_not_see_the_bit() -> None:
    assert run(
        [
            (0, session("198.51.100.7", 40000, "/stage1")),
            (1, session("198.51.100.8", 40001, "/stage2")),
        ]
    ) == [3]


def test_the_bit_expires() -> None:
    assert run(
        [
            (0, session("198.51.100.7", 40000, "/stage1")),
            (11, session("198.51.100.7", 40001, "/stage2")),
        ]
    ) == [3]


def test_ip_pair_is_one_bit_for_both_directions_and_only_that_pair() -> None:
    assert run([(0, session("198.51.100.7", 40000, "/pair"))]) == [5]
    assert run(
        [
            (0, session("198.51.100.7", 40000, "/pair")),
            (1, session("198.51.100.7", 40001, "/x", server="10.0.0.81")),
        ]
    ) == [5]


def test_a_host_bit_set_as_destination_is_seen_as_source() -> None:
    # set on the server's address (ip_dst of the request), checked on its answers (ip_src)
    assert run([(0, session("198.51.100.7", 40000, "/mark"))]) == [7]
    assert run(
        [
            (0, session("198.51.100.7", 40000, "/mark")),
            (1, session("198.51.100.9", 40001, "/other")),
        ]
    ) == [7, 7]


def test_state_unit_set_toggle_unset_expiry_and_bound() -> None:
    state = XbitState(max_entries=2)
    on = [("isset", "x", "ip_src", 30)]
    state.apply([("set", "x", "ip_src", 5)], A, B, 100.0)
    assert state.hold(on, A, C, 104.9)
    assert not state.hold(on, A, C, 105.0)  # expired: gone
    assert len(state) == 0
    state.apply([("toggle", "x", "ip_src", 5)], A, B, 200.0)
    assert state.hold(on, A, B, 200.0)
    state.apply([("toggle", "x", "ip_src", 5)], A, B, 200.0)
    assert not state.hold(on, A, B, 200.0)
    state.apply([("set", "x", "ip_pair", 5)], A, B, 300.0)
    assert state.hold([("isset", "x", "ip_pair", 5)], B, A, 300.0)
    assert not state.hold([("isset", "x", "ip_pair", 5)], A, C, 300.0)
    state.apply([("unset", "x", "ip_pair", 5)], B, A, 300.0)
    assert not state.hold([("isset", "x", "ip_pair", 5)], A, B, 300.0)
    for host in (A, B, C):  # bounded: the least recently set is forgotten
        state.apply([("set", "y", "ip_src", 60)], host, host, 400.0)
    assert len(state) == 2
    assert not state.hold([("isset", "y", "ip_src", 60)], A, A, 400.0)
    assert state.hold([("isset", "y", "ip_src", 60)], C, C, 400.0)


def test_parse() -> None:
    assert parse_xbits("set,ET.a,track ip_src,expire 10") == ("set", "ET.a", "ip_src", 10)
    assert parse_xbits("isnotset, b , track ip_pair") == ("isnotset", "b", "ip_pair", 30)
    assert parse_xbits("noalert") is None


@pytest.mark.parametrize(
    "value",
    [
        "frob,a,track ip_src",
        "set,a",
        "set,a,track tx",
        "set,a,track ip_src,expire 0",
        "set,a,track ip_src,expire x",
        "isset,a|b,track ip_src",
        "set,a,expire 10",
    ],
)
def test_bad_xbits_are_refused_with_the_line(value: str) -> None:
    text = f'alert tcp any any -> any any (msg:"x"; xbits:{value}; sid:9;)'
    with pytest.raises(RuleFileError, match=r"x\.rules:1: .*xbits"):
        list(parse_rules(text, "x.rules", Variables.from_networks(None)))


def test_non_strict_loading_no_longer_skips_xbits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.rules"
    path.write_text(RULES + "\n")
    loaded = load_rules([str(path)], Variables.from_networks(None), strict=False)
    assert len(loaded.signatures) == 7 and not loaded.skipped
