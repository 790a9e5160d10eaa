"""The rule parser: what it accepts, and FILE:LINE errors for what it does not."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from appliance.errors import RuleFileError, UsageError
from appliance.inspect.rules import (
    Content,
    Flags,
    Threshold,
    Variables,
    parse_address,
    parse_content,
    parse_ports,
    parse_rule_files,
    parse_rules,
)
from tests.conftest import REPO

VARS = Variables.from_networks([ipaddress.ip_network("10.0.0.0/8")])


def one(text: str) -> object:
    sigs = list(parse_rules(text, "t.rules", VARS))
    assert len(sigs) == 1
    return sigs[0]


def test_full_rule() -> None:
    sig = one(
        'drop http $EXTERNAL_NET any -> $HOME_NET $HTTP_PORTS (msg:"a \\"quoted\\" msg; yes"; '
        'flow:established,to_server; http.uri; content:"/x|3b|y"; nocase; depth:10; offset:1; '
        'content:!"z"; flags:PA+,12; threshold: type both, track by_dst, count 5, seconds 30; '
        "reference:url,example.com; metadata:created 2026; classtype:web-application-attack; "
        "sid:42; rev:3;)"
    )
    from appliance.inspect.rules import Signature

    assert isinstance(sig, Signature)
    assert (sig.action, sig.proto, sig.app, sig.sid, sig.rev) == ("drop", "http", "http", 42, 3)
    assert sig.msg == 'a "quoted" msg; yes'
    assert sig.contents == (
        Content(b"/x;y", buffer="http.uri", nocase=True, depth=10, offset=1),
        Content(b"z", buffer="http.uri", negated=True),
    )
    assert sig.flow_to_server is True and sig.flow_established is True
    assert sig.flags == Flags(0x18, "+", 0x3F)
    assert sig.threshold == Threshold("both", "by_dst", 5, 30)
    assert sig.priority == 1 and sig.category == "Web Application Attack"
    assert sig.dport.match(8080) and not sig.dport.match(443)
    assert sig.src.match(ipaddress.ip_address("8.8.8.8"))
    assert not sig.src.match(ipaddress.ip_address("10.1.2.3"))


def test_continuation_lines_and_comments() -> None:
    text = '# a comment\n\nalert tcp any any -> any any (msg:"x"; \\\n  sid:5;)\n'
    sig = one(text)
    assert sig.line == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('alert tcp any any -> any any (msg:"x"; bogus:1; sid:1;)', "unknown rule option 'bogus'"),
        ('alert tcp any any -> any any (msg:"x"; sid:1)', "option 'sid:1' is not ended by ';'"),
        ('alert tcp any any -> any any (msg:"x";)', "the rule has no sid"),
        ('reject tcp any any -> any any (msg:"x"; sid:1;)', "unknown action 'reject'"),
        ('alert nntp any any -> any any (msg:"x"; sid:1;)', "unknown protocol 'nntp'"),
        ('alert tcp any any => any any (msg:"x"; sid:1;)', "bad direction '=>'"),
        ('alert tcp 10.0.0.300 any -> any any (msg:"x"; sid:1;)', "bad address '10.0.0.300'"),
        ('alert tcp $NOPE any -> any any (msg:"x"; sid:1;)', "unknown address variable $NOPE"),
        ('alert tcp any 70000 -> any any (msg:"x"; sid:1;)', "port 70000 is out of range"),
        ('alert tcp any 90:80 -> any any (msg:"x"; sid:1;)', "bad port range '90:80'"),
        ('alert tcp any any -> any any msg:"x"; sid:1;', "expected 'ACTION PROTO"),
        ('alert tcp any any -> any (msg:"x"; sid:1;)', "the rule header needs 7 fields"),
        (
            'alert tcp any any -> any any (msg:"x"; nocase; sid:1;)',
            "'nocase' must follow a content",
        ),
        (
            'alert tcp any any -> any any (msg:"x"; content:"abc"; depth:2; sid:1;)',
            "depth 2 is shorter",
        ),
        ('alert tcp any any -> any any (msg:"x"; content:"|4g|"; sid:1;)', "bad hex in content"),
        ('alert tcp any any -> any any (msg:"x"; content:"|41"; sid:1;)', "unterminated |hex|"),
        ('alert tcp any any -> any any (msg:"x"; content:abc; sid:1;)', "content must be a quoted"),
        ('alert tcp any any -> any any (msg:"x"; flags:SX; sid:1;)', "unknown flag 'X'"),
        ('alert tcp any any -> any any (msg:"x"; flags:+*S; sid:1;)', "only one modifier"),
        ('alert tcp any any -> any any (msg:"x"; flow:sideways; sid:1;)', "unknown flow keyword"),
        (
            'alert tcp any any -> any any (msg:"x"; flow:to_server,to_client; sid:1;)',
            "exclude each other",
        ),
        (
            'alert tcp any any -> any any (msg:"x"; classtype:nope; sid:1;)',
            "unknown classtype 'nope'",
        ),
        ('alert tcp any any -> any any (msg:"x"; sid:abc;)', "expected an integer"),
        ('alert tcp any any -> any any (msg:"x"; sid:1; sid:2;)', "option 'sid' given twice"),
        (
            'alert tcp any any -> any any (msg:"x"; threshold: type sometimes, track by_src,'
            " count 1, seconds 1; sid:1;)",
            "type must be limit, threshold or both",
        ),
        (
            'alert tcp any any -> any any (msg:"x"; threshold: type limit, count 1; sid:1;)',
            "missing track, seconds",
        ),
        (
            'alert udp any any -> any any (msg:"x"; tls.sni; content:"a"; sid:1;)',
            "tls buffers need",
        ),
        (
            'alert dns any any -> any any (msg:"x"; http.uri; content:"a"; sid:1;)',
            "mixes protocols",
        ),
        ('alert tcp any any -> any any (msg:"x"; sid:1; nocase)', "is not ended by ';'"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(RuleFileError) as caught:
        list(parse_rules("# header\n\n" + text + "\n", "edge.rules", VARS))
    assert str(caught.value).startswith("edge.rules:3: ")
    assert message in str(caught.value)


def test_duplicate_sid_across_files(tmp_path: Path) -> None:
    a = tmp_path / "a.rules"
    b = tmp_path / "b.rules"
    a.write_text('alert tcp any any -> any any (msg:"a"; sid:9;)\n')
    b.write_text('\nalert udp any any -> any any (msg:"b"; sid:9;)\n')
    with pytest.raises(RuleFileError, match=r"b.rules:2: duplicate sid 9 \(first at .*a.rules:1\)"):
        parse_rule_files([str(a), str(b)], VARS)


def test_unreadable_or_not_text_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"/nonexistent/x\.rules: cannot read rule file") as caught:
        parse_rule_files(["/nonexistent/x.rules"], VARS)
    assert caught.value.exit_code == 2
    binary = tmp_path / "b.rules"
    binary.write_bytes(b"# ok\n\xff\xfe\n")
    with pytest.raises(RuleFileError, match=r"b.rules:2: not UTF-8 text"):
        parse_rule_files([str(binary)], VARS)


def test_addresses_and_ports() -> None:
    home = parse_address("$HOME_NET", VARS)
    ext = parse_address("$EXTERNAL_NET", VARS)
    inside, outside = ipaddress.ip_address("10.9.9.9"), ipaddress.ip_address("192.0.2.1")
    assert home.match(inside) and not home.match(outside)
    assert ext.match(outside) and not ext.match(inside)
    mixed = parse_address("[10.0.0.0/8, ![10.1.0.0/16, 10.2.0.0/16], 2001:db8::/32]", VARS)
    assert mixed.match(inside) and not mixed.match(ipaddress.ip_address("10.2.3.4"))
    assert mixed.match(ipaddress.ip_address("2001:db8::5"))
    assert parse_address("[!$EXTERNAL_NET]", VARS).match(inside)
    ports = parse_ports("[1:1024, !80, 8080]", VARS)
    assert ports.match(22) and not ports.match(80) and ports.match(8080) and not ports.match(8081)
    assert parse_ports("!$HTTP_PORTS", VARS).match(22)


def test_default_home_net_without_networks() -> None:
    variables = Variables.from_networks(None)
    home = parse_address("$HOME_NET", variables)
    assert home.match(ipaddress.ip_address("192.168.1.1")) and home.match(
        ipaddress.ip_address("fd00::1")
    )
    assert not home.match(ipaddress.ip_address("8.8.8.8"))


def test_content_escapes() -> None:
    assert parse_content('"a\\"b\\;c\\\\d|20 41|"') == (b'a"b;c\\d A', False)
    assert parse_content('!"x"') == (b"x", True)


def test_shipped_rule_set() -> None:
    sigs = parse_rule_files([str(REPO / "profiles" / "rules" / "edge.rules")], VARS)
    assert 90 <= len(sigs) <= 150
    assert len({s.sid for s in sigs}) == len(sigs)
    for sig in sigs:
        assert 1_000_000 < sig.sid < 2_000_000
        assert sig.msg and sig.classtype and sig.rev >= 1
    protos = {s.proto for s in sigs}
    assert {"tcp", "http", "dns", "tls", "gtp"} <= protos
