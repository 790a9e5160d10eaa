"""tls.version, ssl_version, ssl_state and tls.cert_chain_len over crafted TLS 1.2 and 1.3
handshakes."""

from __future__ import annotations

from scapy.all import TCP, Packet  # type: ignore[attr-defined]

from appliance.inspect.tlsinfo import hello_version
from tests.inspect.test_tlsinfo import (
    C2S,
    SERVER_HELLO_EXTENSIONS,
    _handshake,
    _record,
    certificate_message,
    chain,
    rules,
    server_hello,
    session,
)
from tests.inspect.traffic import client_hello, inspect, sids

TLS13_SERVER = SERVER_HELLO_EXTENSIONS + b"\x00\x2b\x00\x02\x03\x04"  # supported_versions: 1.3


def tls12_flight() -> bytes:
    """ServerHello, Certificate (two), ServerKeyExchange, ServerHelloDone."""
    messages = certificate_message(chain()) + _handshake(12, bytes(40)) + _handshake(14, b"")
    return _record(22, server_hello()) + _record(22, messages)


def tls13_flight() -> bytes:
    return _record(22, server_hello(TLS13_SERVER)) + _record(20, b"\x01") + _record(23, bytes(80))


def with_client_keyx(packets: list[Packet]) -> list[Packet]:
    """The client's ClientKeyExchange and ChangeCipherSpec after its hello, in place of its
    first application data."""
    hello = client_hello("evil.example")
    keyx = _record(22, _handshake(16, bytes(33))) + _record(20, b"\x01")
    seq = 1001 + len(hello)
    return [*packets[:-1], C2S / TCP(sport=40001, dport=443, flags="PA", seq=seq) / keyx]


def test_hello_versions() -> None:
    assert hello_version(server_hello()[4:], client=False) == 0x0303
    assert hello_version(server_hello(TLS13_SERVER)[4:], client=False) == 0x0304
    assert hello_version(client_hello("a.example")[9:], client=True) == 0x0303
    assert hello_version(b"\x03", client=True) is None
    assert hello_version(b"\x03\x01", client=True) == 0x0301  # cut short: the legacy field


def test_tls_version_and_ssl_version() -> None:
    ruleset = rules(
        "flow:to_client; tls.version:1.2;",
        "flow:to_server; tls.version:0x0303;",
        "ssl_version:tls1.1,tls1.2;",
        "tls.version:1.3;",
        "ssl_version:tls1.3;",
        "ssl_version:!tls1.2;",
    )
    found = sids(inspect(session(tls12_flight()), ruleset))
    assert sorted(found) == [1, 2, 3, 3]  # ssl_version: the client's hello and the server's
    found = sids(inspect(session(tls13_flight()), ruleset))
    assert sorted(found) == [2, 3, 4, 5, 6]  # the client says 1.2, the server chose 1.3


def test_ssl_state_counts_each_message_of_the_handshake() -> None:
    ruleset = rules(
        "flow:to_server; ssl_state:client_hello;",
        "flow:to_client; ssl_state:server_hello;",
        "ssl_state:server_keyx;",
        "ssl_state:client_keyx;",
        "ssl_state:client_keyx|server_keyx;",
        "flow:to_server; ssl_state:!client_hello;",
        "ssl_state:unknown;",
    )
    found = sids(inspect(with_client_keyx(session(tls12_flight())), ruleset))
    # 5 twice (each key exchange); 6 on the client's key exchange, which is no hello
    assert sorted(found) == [1, 2, 3, 4, 5, 5, 6]
    assert sids(inspect(session(tls13_flight()), ruleset)) == [1, 2]


def test_cert_chain_len() -> None:
    ruleset = rules(
        "tls.cert_chain_len:2;",
        "tls.cert_chain_len:>2;",
        "tls.cert_chain_len:<3;",
        "tls.cert_chain_len:!2;",
    )
    assert sorted(sids(inspect(session(tls12_flight(), 4), ruleset))) == [1, 3]


def test_the_version_lasts_for_the_flow_and_a_rule_on_it_alerts_once_a_direction() -> None:
    """As Suricata keeps the version in the flow's TLS state: a rule on the version and the
    payload of a later segment matches that segment; a rule on the version alone alerts
    once per direction, not on every later packet."""
    ruleset = rules(
        'flow:to_server; tls.version:1.2; content:"|17 03 03|"; depth:3; content:"later";',
        'flow:to_server; tls.version:1.3; content:"later";',  # the client said 1.2
        "flow:to_server; tls.version:1.2;",
        'flow:to_client; ssl_version:tls1.3; content:"|17 03 03 00 28|";',
        'flow:to_client; tls.version:1.2; content:"|17 03 03 00 28|";',  # the server: 1.3
    )
    packets = session(tls13_flight())
    seq = 1001 + len(client_hello("evil.example")) + 6
    for i in range(3):  # more application data from the client
        data = _record(23, b"later" + bytes(i))
        packets.append(C2S / TCP(sport=40001, dport=443, flags="PA", seq=seq) / data)
        seq += len(data)
    found = sids(inspect(packets, ruleset, encryption_handling="full"))
    # 1: once, on the first later segment; 3: once, on the hello; 4: on the server's data
    assert sorted(found) == [1, 3, 4]
    no_later = inspect(session(tls13_flight()), ruleset, encryption_handling="full")
    assert sorted(sids(no_later)) == [3, 4]
    # Suricata's default: the application data in the server's flight turns the flow
    # encrypted; the payload of the segments after it (the rules 1 and 4 read) is not
    # inspected, the rule on the version alone still alerts
    assert sids(inspect(packets, ruleset)) == [3]
