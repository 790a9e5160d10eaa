"""flowint: integer variables per flow, checked as conditions and assigned when a rule matches,
with Suricata's order, unsigned 32-bit arithmetic and a bound per flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import TCP  # type: ignore[attr-defined]

from appliance.errors import RuleFileError
from appliance.inspect.eve import to_eve
from appliance.inspect.flowint import (
    MAX_VARS,
    U32,
    Flowint,
    FlowVars,
    apply,
    hold,
    order,
    parse_flowint,
)
from appliance.inspect.rules import Variables, load_rules, parse_rules, state_order
from tests.inspect.traffic import engine, frames, http_get, run_cli, sids, tcp_exchange, write

VARS = Variables.from_networks(None)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def session(
    cport: int, payloads: list[bytes], client: str = "198.51.100.7", server: str = "10.0.0.80"
) -> list[Any]:
    """A TCP connection to port 80 carrying each payload in order, each answered by an empty
    200, the sequence numbers as a real stack writes them."""
    return tcp_exchange(client, server, cport, 80, payloads, answer=OK, seq=1001, ack=5001)


def alerts(rules: str, *flows: list[Any], compiled: bool = True) -> list[dict[str, Any]]:
    """The EVE alerts of the flows, one after the other through one engine (with the
    compiled core where it is built, or its Python twin)."""
    eng = engine(rules, compiled=compiled)
    events: list[dict[str, Any]] = []
    for i, packets in enumerate(flows):
        for ts, data, linktype in frames(packets, t0=1_700_000_000.0 + i):
            events.extend(to_eve(a) for a in eng.process(ts, data, linktype))
    return events


def http_rule(sid: int, options: str, msg: str = "r") -> str:
    return (
        f'alert http any any -> any any (msg:"{msg}"; flow:established,to_server; '
        f'http.method; content:"GET"; {options} sid:{sid};)'
    )


COUNT_REQUESTS = "\n".join(
    [
        http_rule(1, "flowint:requests,+,1; noalert;", "count"),
        http_rule(2, "flowint:requests,==,3;", "third request"),
    ]
)


@pytest.mark.parametrize("compiled", [True, False])
def test_a_rule_counts_the_requests_of_a_flow_and_another_alerts_at_the_third(
    compiled: bool,
) -> None:
    five = session(40000, [http_get(f"/{i}") for i in range(1, 6)])
    events = alerts(COUNT_REQUESTS, five, compiled=compiled)
    assert sids(events) == [2]
    assert events[0]["http"]["url"] == "/3"


@pytest.mark.parametrize("compiled", [True, False])
def test_a_rule_of_flowints_alone_counts_every_packet_of_the_flow(compiled: bool) -> None:
    # no content: checked on each packet (none takes a fast path past it)
    rules = "\n".join(
        [
            'alert tcp any any -> any 80 (msg:"count"; flowint:packets,+,1; noalert; sid:1;)',
            'alert tcp any any -> any 80 (msg:"fifth"; flowint:packets,==,5; sid:2;)',
        ]
    )
    eng = engine(rules, compiled=compiled)
    found = []
    # to the server: the SYN, the handshake's ACK, then a, b, c, d
    packets = session(40000, [b"a", b"b", b"c", b"d"])
    for packet, (ts, data, linktype) in zip(packets, frames(packets), strict=True):
        for alert in eng.process(ts, data, linktype):
            found.append((to_eve(alert)["alert"]["signature_id"], bytes(packet[TCP].payload)))
    assert found == [(2, b"c")]


def test_each_flow_counts_on_its_own() -> None:
    two = [http_get("/a"), http_get("/b")]
    assert alerts(COUNT_REQUESTS, session(40000, two), session(40001, two)) == []
    events = alerts(COUNT_REQUESTS, session(40000, two), session(40001, [*two, http_get("/c")]))
    assert [(e["src_port"], e["http"]["url"]) for e in events] == [(40001, "/c")]


def test_in_one_rule_the_check_comes_before_the_assignment() -> None:
    # the check does not hold on an unset variable, so the rule never matches and never adds
    alone = http_rule(1, "flowint:n,+,1; flowint:n,==,1;")
    requests = session(40000, [http_get(f"/{i}") for i in range(4)])
    assert alerts(alone, requests) == []
    # started at 1 by another rule on /0: the check sees 1 on /1, before its own addition
    # (checked after it, n would be 2), and n is 2 from then on
    start = http_rule(2, "flowint:n,notset; flowint:n,=,1; noalert;")
    events = alerts(f"{alone}\n{start}", requests)
    assert [e["http"]["url"] for e in events] == ["/1"]


def test_suricata_login_example_alerts_past_five_failures() -> None:
    rules = "\n".join(
        [
            'alert tcp any any -> any any (msg:"start"; content:"login failed"; '
            "flowint:loginfail,notset; flowint:loginfail,=,1; noalert; sid:1;)",
            'alert tcp any any -> any any (msg:"count"; content:"login failed"; '
            "flowint:loginfail,isset; flowint:loginfail,+,1; noalert; sid:2;)",
            'alert tcp any any -> any any (msg:"more than five"; content:"login failed"; '
            "flowint:loginfail,isset; flowint:loginfail,>,5; sid:3;)",
        ]
    )
    failures = [b"login failed %d\r\n" % i for i in range(1, 9)]
    eng = engine(rules)
    found = []
    for ts, data, linktype in frames(session(40000, failures)):
        for alert in eng.process(ts, data, linktype):
            found.append((to_eve(alert)["alert"]["signature_id"], data[-3:-2]))
    # sids 1 and 2 both check and assign: by sid, so the first failure counts 2 at once
    # (as Suricata runs them); sid 3 only checks, after them: 6 > 5 on the fifth failure
    assert found == [(3, b"5"), (3, b"6"), (3, b"7"), (3, b"8")]


def test_a_variable_as_value_and_an_unset_one_read_as_zero() -> None:
    rules = "\n".join(
        [
            http_rule(1, "flowint:two,notset; flowint:two,=,2; noalert;"),
            http_rule(2, "flowint:seen,+,1; noalert;"),
            http_rule(3, "flowint:seen,==,two;", "seen == two"),
            http_rule(4, "flowint:seen,>,never;", "seen > an unset variable"),
            http_rule(5, "flowint:copy,=,seen; noalert;"),
            http_rule(6, "flowint:copy,==,3;", "copied 3"),
        ]
    )
    # on each request: sids 2 and 5 (they only assign), then 1 (checks and assigns), then
    # the checks; sid 5 copies the count sid 2 has just made
    events = alerts(rules, session(40000, [http_get("/a"), http_get("/b"), http_get("/c")]))
    assert [(e["http"]["url"], e["alert"]["signature_id"]) for e in events] == [
        ("/a", 4),
        ("/b", 3),
        ("/b", 4),
        ("/c", 4),
        ("/c", 6),
    ]


def test_an_assigning_rule_runs_before_a_checking_one_of_the_same_packet() -> None:
    # the checking rule has the lower sid, yet sees the variable the other sets
    rules = "\n".join(
        [
            http_rule(1, "flowint:hit,isset;", "checks"),
            http_rule(2, "flowint:hit,=,1; noalert;", "sets"),
        ]
    )
    events = alerts(rules, session(40000, [http_get("/only")]))
    assert sids(events) == [1]


def test_flowints_and_flowbits_together() -> None:
    rules = "\n".join(
        [
            http_rule(1, "flowbits:set,seen; flowint:n,+,1; noalert;"),
            http_rule(2, "flowbits:isset,seen; flowint:n,==,2;", "second with the bit"),
        ]
    )
    events = alerts(rules, session(40000, [http_get("/1"), http_get("/2"), http_get("/3")]))
    assert [e["http"]["url"] for e in events] == ["/2"]


def test_past_the_bound_a_new_variable_is_not_made_and_is_counted() -> None:
    names = [f"v{i}" for i in range(MAX_VARS + 2)]
    options = " ".join(f"flowint:{n},=,1;" for n in names)
    rules = "\n".join(
        [
            http_rule(1, f"{options} noalert;"),
            http_rule(2, f"flowint:{names[MAX_VARS - 1]},isset;", "last kept"),
            http_rule(3, f"flowint:{names[MAX_VARS]},isset;", "past the bound"),
        ]
    )
    eng = engine(rules)
    found = []
    for ts, data, linktype in frames(session(40000, [http_get("/1"), http_get("/2")])):
        found.extend(sids(to_eve(a) for a in eng.process(ts, data, linktype)))
    assert found == [2, 2]
    assert eng.stats.errors["flowint.dropped"] == 4  # two names, twice


# ---- the state on its own ----------------------------------------------------------------


def test_every_modifier() -> None:
    ints: dict[str, int] = {}
    apply([("a", "=", 5), ("b", "+", 3), ("c", "-", 1)], ints)
    assert ints == {"a": 5, "b": 3}  # "-" on an unset variable leaves it unset
    apply([("a", "+", 2), ("b", "-", 1), ("c", "=", "a")], ints)
    assert ints == {"a": 7, "b": 2, "c": 7}
    apply([("d", "=", "unset"), ("e", "+", "unset")], ints)  # an unset value reads as 0
    assert ints.pop("d") == 0 and ints.pop("e") == 0
    cases: list[tuple[Flowint, bool]] = [
        (("a", "==", 7), True),
        (("a", "==", "c"), True),
        (("a", "!=", 7), False),
        (("a", "!=", "b"), True),
        (("a", "<", 8), True),
        (("a", "<", 7), False),
        (("a", "<=", 7), True),
        (("a", ">", "b"), True),
        (("a", ">", 7), False),
        (("a", ">=", 7), True),
        (("a", ">=", 8), False),
        (("a", "isset", None), True),
        (("z", "isset", None), False),
        (("a", "notset", None), False),
        (("z", "notset", None), True),
        (("a", ">", "z"), True),  # an unset variable as the value: 0
        (("z", "!=", 1), False),  # an unset variable compared: never holds
        (("z", "<", 1), False),
    ]
    for flowint, expected in cases:
        assert hold([flowint], ints) is expected, flowint
    # assignments are not conditions, conditions are not assignments
    assert hold([("a", "=", 0), ("zz", "+", 1)], ints)
    before = dict(ints)
    apply([("a", "==", 0), ("a", "isset", None)], ints)
    assert ints == before


def test_unsigned_32_bit_overflow_and_underflow_wrap() -> None:
    ints = {"n": U32}
    apply([("n", "+", 1)], ints)
    assert ints["n"] == 0
    apply([("n", "-", 1)], ints)
    assert ints["n"] == U32
    apply([("n", "+", U32)], ints)
    assert ints["n"] == U32 - 1


def test_the_bound_counts_only_new_variables() -> None:
    ints = {f"v{i}": i for i in range(3)}
    errors: dict[str, int] = {}
    apply([("v0", "+", 1), ("v1", "=", 9), ("new", "=", 1), ("new", "+", 1)], ints, errors, 3)
    assert ints == {"v0": 1, "v1": 9, "v2": 2}
    assert errors == {"flowint.dropped": 2}
    apply([("v2", "-", 5)], ints, errors, 3)
    assert ints["v2"] == (2 - 5) & U32 and errors == {"flowint.dropped": 2}


def test_the_order_of_rules_by_their_flowints() -> None:
    assert order([("a", "+", 1)]) == 0
    assert order([("a", "isset", None), ("a", "+", 1)]) == 1
    assert order([("a", ">", 1)]) == 2
    assert order([]) == 3


def test_flow_vars_are_the_flowbits_set_with_the_flowints_beside() -> None:
    bits = FlowVars({"x"})
    bits.ints["n"] = 1
    assert bits == {"x"} and "x" in bits and bits.ints == {"n": 1}
    assert not FlowVars() and FlowVars().ints == {}


# ---- parsing -----------------------------------------------------------------------------


def test_parse() -> None:
    assert parse_flowint("ET.infostealer.dll.download, +, 1") == (
        "ET.infostealer.dll.download",
        "+",
        1,
    )
    assert parse_flowint("a,=,4294967295") == ("a", "=", U32)
    assert parse_flowint(" cnt , >= , max_var ") == ("cnt", ">=", "max_var")
    assert parse_flowint("a,isset") == ("a", "isset", None)
    assert parse_flowint("a, notset") == ("a", "notset", None)
    assert parse_flowint("a,isnotset") == ("a", "notset", None)
    for modifier in ("==", "!=", "<", "<=", ">", ">=", "-"):
        assert parse_flowint(f"x/y_1,{modifier},0") == ("x/y_1", modifier, 0)


BAD = [
    "a",  # no modifier
    "a,+",  # no value
    "a,+,",  # an empty value
    "a,isset,1",  # a value where none is taken
    "a,~,1",  # not a modifier
    "a,=>,1",
    "1a,=,1",  # a name starts with a letter
    "a b,=,1",
    ",=,1",
    "a,=,4294967296",  # past 32 bits
    "a,=," + "9" * 5000,
    "a,=,-1",
    "a,=,0x10",
    "a,=,b c",
    "a,=,1,2",
    "a,=,\uff11",  # not ASCII digits (a full-width one)
]


@pytest.mark.parametrize("value", BAD)
def test_bad_flowints_are_refused_with_the_line(value: str) -> None:
    text = f'alert tcp any any -> any any (msg:"x"; flowint:{value}; sid:9;)'
    with pytest.raises(RuleFileError, match=r"^x\.rules:1: flowint: "):
        list(parse_rules(text, "x.rules", VARS))


def test_a_bad_flowint_skips_its_rule_with_a_reason_and_strict_refuses(tmp_path: Path) -> None:
    path = tmp_path / "r.rules"
    path.write_text(
        "# counting\n"
        'alert tcp any any -> any any (msg:"ok"; content:"a"; flowint:n,+,1; sid:1;)\n'
        'alert tcp any any -> any any (msg:"bad"; content:"a"; flowint:n,+; sid:2;)\n'
    )
    rules = load_rules([str(path)], VARS)
    assert [s.sid for s in rules.signatures] == [1]
    assert rules.reasons() == {"invalid": 1}
    assert rules.skipped[0].warning == f"{path}:3: flowint: + needs a value"
    with pytest.raises(RuleFileError, match=r"r\.rules:3: flowint: \+ needs a value"):
        load_rules([str(path)], VARS, strict=True)


def test_the_cli_skips_a_bad_flowint_and_strict_exits_2(tmp_path: Path) -> None:
    rules = tmp_path / "c.rules"
    rules.write_text(COUNT_REQUESTS + "\n" + http_rule(3, "flowint:n,frob,1;") + "\n")
    pcap = write(tmp_path / "x.pcap", session(40000, [http_get(f"/{i}") for i in range(1, 5)]))
    code, events, stderr = run_cli("--pcap", str(pcap), "--rules", str(rules))
    assert code == 0, stderr
    assert stderr.startswith(f"{rules}:3: flowint: unknown modifier 'frob'")
    assert [(e["alert"]["signature_id"], e["http"]["url"]) for e in events] == [(2, "/3")]
    code, events, stderr = run_cli("--pcap", str(pcap), "--rules", str(rules), "--strict")
    assert code == 2 and events == []
    assert stderr.startswith(f"{rules}:3: flowint: unknown modifier 'frob'")
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr


# ---- against a model ---------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c"])
OPS = st.tuples(
    NAMES,
    st.sampled_from(["=", "+", "-", "==", "!=", "<", "<=", ">", ">=", "isset", "notset"]),
    st.one_of(st.integers(0, U32), NAMES),
)


def model(ops: list[Flowint], ints: dict[str, int], cap: int) -> tuple[bool, dict[str, int]]:
    """Suricata's evaluation written out plainly: every condition first, then each
    assignment in turn (a value read when its assignment runs)."""
    state = dict(ints)
    for name, modifier, value in ops:
        if modifier in ("=", "+", "-"):
            continue
        if modifier == "isset":
            ok = name in state
        elif modifier == "notset":
            ok = name not in state
        else:
            target = value if isinstance(value, int) else state.get(str(value), 0)
            ok = (
                name in state
                and {
                    "==": state[name] == target,
                    "!=": state[name] != target,
                    "<": state[name] < target,
                    "<=": state[name] <= target,
                    ">": state[name] > target,
                    ">=": state[name] >= target,
                }[modifier]
            )
        if not ok:
            return False, state
    for name, modifier, value in ops:
        if modifier not in ("=", "+", "-"):
            continue
        target = value if isinstance(value, int) else state.get(str(value), 0)
        if name not in state:
            if modifier != "-" and len(state) < cap:
                state[name] = target
        elif modifier == "=":
            state[name] = target
        elif modifier == "+":
            state[name] = (state[name] + target) % 2**32
        else:
            state[name] = (state[name] - target) % 2**32
    return True, state


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.lists(OPS, max_size=5), max_size=8), st.integers(1, 3))
def test_rules_applied_one_after_another_as_the_model_says(
    rules: list[list[Flowint]], cap: int
) -> None:
    ints: dict[str, int] = {}
    for ops in rules:
        matched, expected = model(ops, ints, cap)
        assert hold(ops, ints) is matched
        if matched:
            apply(ops, ints, {}, cap)
        assert ints == expected
        assert len(ints) <= cap and all(0 <= v <= U32 for v in ints.values())


def test_the_order_of_stateful_rules_follows_suricata() -> None:
    rules = "\n".join(
        [
            'alert tcp any any -> any any (content:"x"; flowbits:isset,b; sid:1;)',
            'alert tcp any any -> any any (content:"x"; flowint:n,>,1; sid:2;)',
            'alert tcp any any -> any any (content:"x"; flowint:n,isset; flowint:n,+,1; sid:3;)',
            'alert tcp any any -> any any (content:"x"; flowint:n,=,1; sid:4;)',
            'alert tcp any any -> any any (content:"x"; flowbits:set,b; flowint:n,>,1; sid:5;)',
            'drop tcp any any -> any any (content:"x"; flowint:n,==,1; sid:6;)',
            'alert tcp any any -> any any (content:"x"; xbits:set,h,track ip_src; sid:7;)',
            'alert tcp any any -> any any (content:"x"; flowint:n,=,1; priority:1; sid:8;)',
        ]
    )
    sigs = list(parse_rules(rules, "o.rules", VARS))
    ordered = [s.sid for s in sorted(sigs, key=state_order)]
    # drop first; then flowbits setters, flowbits readers, rules without flowbits; within
    # those flowint assigners, assigners that check, checkers, none; then priority, sid
    assert ordered == [6, 5, 1, 8, 4, 3, 2, 7]


def test_a_drop_rule_checks_before_an_alert_rule_assigns_on_the_same_packet() -> None:
    rules = "\n".join(
        [
            'alert tcp any any -> any any (msg:"set"; content:"x"; flowint:n,=,1; sid:1;)',
            'drop tcp any any -> any any (msg:"check"; content:"x"; flowint:n,isset; sid:2;)',
        ]
    )
    eng = engine(rules)
    found = []
    for ts, data, linktype in frames(session(40000, [b"x1", b"x2"])):
        found.append(sorted(sids(to_eve(a) for a in eng.process(ts, data, linktype))))
    assert [f for f in found if f] == [[1], [1, 2]]


@pytest.mark.parametrize("compiled", [True, False])
def test_a_pass_rule_ends_the_packet_no_later_rule_sets_state(compiled: bool) -> None:
    setters = [
        'alert tcp any any -> any any (content:"x"; flowbits:set,b; flowint:n,+,1; noalert; '
        "sid:1;)",
        'alert tcp any any -> any any (msg:"bit"; content:"y"; flowbits:isset,b; sid:2;)',
        'alert tcp any any -> any any (msg:"count"; content:"y"; flowint:n,isset; sid:3;)',
    ]
    passing = 'pass tcp any any -> any any (content:"x"; flowbits:set,p; noalert; sid:4;)'
    flow = session(40010, [b"x1", b"y1"])
    assert sorted(sids(alerts("\n".join(setters), flow, compiled=compiled))) == [2, 3]
    # the pass rule matches the first request: the setter is not run, nothing is set
    assert alerts("\n".join([*setters, passing]), flow, compiled=compiled) == []


ET_RULE = (
    'alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"ET HUNTING HTTP GET Request for '
    'PSSQLite.zip - Possible Infostealer Activity"; flow:established,to_server; http.method; '
    'content:"GET"; http.uri; content:"PSSQLite.zip"; fast_pattern; '
    "xbits:set,ET.infostealer.pattern.1,track ip_src,expire 15; "
    "xbits:set,ET.infostealer.pattern.2,track ip_pair,expire 15; "
    "flowint: ET.infostealer.dll.download, +, 1; classtype:suspicious-filename-detect; "
    "sid:2045602; rev:1; target:src_ip;)"
)


def test_the_et_rule_with_flowint_loads_and_counts() -> None:
    (sig,) = parse_rules(ET_RULE, "et.rules", VARS)
    assert sig.flowint == (("ET.infostealer.dll.download", "+", 1),)
    eng = engine(ET_RULE)
    found = []
    requests = [http_get("/x/PSSQLite.zip"), http_get("/y/PSSQLite.zip")]
    packets = session(40000, requests, client="10.0.0.7", server="203.0.113.5")
    for ts, data, linktype in frames(packets):
        found.extend(sids(to_eve(a) for a in eng.process(ts, data, linktype)))
    assert found == [2045602, 2045602]
    (flow,) = eng.flows.flows.values()
    assert isinstance(flow.bits, FlowVars)
    assert flow.bits.ints == {"ET.infostealer.dll.download": 2}
