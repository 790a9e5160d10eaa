"""The TLS handshake in clear: the server's certificate chain (made here with cryptography)
read over the reassembled stream, JA3 and JA3S; rules that must match and rules that must
not."""

from __future__ import annotations

import datetime
import hashlib
import random
import warnings
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from scapy.all import IP, TCP, Ether, Packet  # type: ignore[attr-defined]

from appliance.errors import RuleFileError
from appliance.inspect.decode import Errors
from appliance.inspect.tlsinfo import (
    SERVER_BUFFERS,
    cert_buffers,
    certificates,
    is_grease,
    ja3_client,
    ja3_server,
    name_text,
    serial_text,
)
from tests.inspect.traffic import client_hello, engine, frames, inspect, sids

C2S = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="192.0.2.44")
S2C = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / IP(src="192.0.2.44", dst="10.0.0.1")
SERVER_HELLO_EXTENSIONS = b"\xff\x01\x00\x01\x00" + b"\x00\x0b\x00\x02\x01\x00"


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


@cache
def chain() -> tuple[bytes, bytes]:
    """A server certificate (expired in 2021) and the CA certificate that signed it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name((NameOID.COUNTRY_NAME, "XX"), (NameOID.ORGANIZATION_NAME, "Evil CA"))
    start = datetime.datetime(2020, 1, 1)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(0x5C19B7)
        .not_valid_before(start)
        .not_valid_after(datetime.datetime(2040, 1, 1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("second.example")]), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            _name(
                (NameOID.COUNTRY_NAME, "US"),
                (NameOID.ORGANIZATION_NAME, "Evil Org"),
                (NameOID.COMMON_NAME, "evil.example"),
            )
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(0x80AB)
        .not_valid_before(start)
        .not_valid_after(datetime.datetime(2021, 1, 1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False)
        .sign(ca_key, hashes.SHA256())
    )
    der = serialization.Encoding.DER
    return leaf.public_bytes(der), ca.public_bytes(der)


def _handshake(kind: int, body: bytes) -> bytes:
    return bytes((kind,)) + len(body).to_bytes(3, "big") + body


def _record(kind: int, body: bytes) -> bytes:
    return bytes((kind, 3, 3)) + len(body).to_bytes(2, "big") + body


def server_hello(extensions: bytes = SERVER_HELLO_EXTENSIONS) -> bytes:
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\xc0\x2f" + b"\x00"
    return _handshake(2, body + len(extensions).to_bytes(2, "big") + extensions)


def certificate_message(certs: tuple[bytes, ...]) -> bytes:
    items = b"".join(len(c).to_bytes(3, "big") + c for c in certs)
    return _handshake(11, len(items).to_bytes(3, "big") + items)


def server_flight() -> bytes:
    """ServerHello, Certificate (leaf and CA) and ServerHelloDone, in two records."""
    return _record(22, server_hello()) + _record(
        22, certificate_message(chain()) + _handshake(14, b"")
    )


def session(flight: bytes, parts: int = 3, hello: bytes | None = None) -> list[Packet]:
    """A TLS 1.2 connection: the ClientHello, the server's flight cut into ``parts``
    segments, then application data both ways."""
    hello = client_hello("evil.example") if hello is None else hello
    out = [
        C2S / TCP(sport=40001, dport=443, flags="S", seq=1000),
        S2C / TCP(sport=443, dport=40001, flags="SA", seq=7000, ack=1001),
        C2S / TCP(sport=40001, dport=443, flags="A", seq=1001, ack=7001),
        C2S / TCP(sport=40001, dport=443, flags="PA", seq=1001, ack=7001) / hello,
    ]
    step = -(-len(flight) // parts)
    for i in range(0, len(flight), step):
        out.append(
            S2C / TCP(sport=443, dport=40001, flags="PA", seq=7001 + i) / flight[i : i + step]
        )
    after = 7001 + len(flight)
    out.append(S2C / TCP(sport=443, dport=40001, flags="PA", seq=after) / _record(23, b"x" * 40))
    out.append(
        C2S
        / TCP(sport=40001, dport=443, flags="PA", seq=1001 + len(hello))
        / b"\x17\x03\x03\x00\x01y"
    )
    return out


def fingerprint() -> str:
    return ":".join(f"{b:02x}" for b in hashlib.sha1(chain()[0]).digest())


def rules(*bodies: str) -> str:
    return "".join(
        f'alert tls any any -> any any (msg:"r{i}"; {body} sid:{i};)\n'
        for i, body in enumerate(bodies, 1)
    )


def test_certificate_buffers_as_suricata_writes_them() -> None:
    leaf = x509.load_der_x509_certificate(chain()[0])
    assert name_text(leaf.subject) == "C=US, O=Evil Org, CN=evil.example"
    assert name_text(leaf.issuer) == "C=XX, O=Evil CA"
    assert serial_text(0x80AB) == "00:80:AB"  # the DER integer's bytes
    assert serial_text(0x5C19B7) == "5C:19:B7"
    assert certificates(certificate_message(chain())[4:]) == list(chain())


@pytest.mark.parametrize("parts", [1, 3, 17])
def test_certificate_rules_match_across_segments(parts: int) -> None:
    ruleset = rules(
        'flow:established,to_client; tls.cert_subject; content:"CN=evil.example"; endswith;',
        'tls.cert_issuer; content:"O=Evil CA";',
        'tls.cert_serial; content:"00:80:AB";',
        f'tls.cert_fingerprint; content:"{fingerprint()}";',
        'tls.certs; content:"second.example";',
        "tls_cert_expired;",
        'tls_cert_subject; content:"evil.example"; tls.issuerdn:!"Good CA";',
        f'tls.fingerprint:"{fingerprint()}";',
        'tls.subject:"Evil Org";',
        "tls_cert_notbefore:2019-06-01<>2020-06-01;",
        "tls_cert_notafter:<2021-06;",
        "tls_cert_notbefore:2020-01-01T00:00:00;",
    )
    assert sorted(sids(inspect(session(server_flight(), parts), ruleset))) == list(range(1, 13))


def test_certificate_rules_that_must_not_match() -> None:
    ruleset = rules(
        'tls.cert_subject; content:"CN=good.example";',
        'flow:to_server; tls.cert_issuer; content:"Evil";',  # certificates come from the server
        'tls.cert_serial; content:"5C:19:B7";',  # the CA's: not the server's certificate
        # tls.certs: each certificate on its own, not the chain as one buffer
        'tls.certs; content:"evil.example"; content:"second.example";',
        "tls_cert_valid;",
        'tls.cert_subject; content:"evil"; tls.issuerdn:!"Evil CA";',
        "tls_cert_notafter:>2030;",
        "tls_cert_notbefore:2020-01-01T00:00:01<>2020-12-31;",
    )
    assert sids(inspect(session(server_flight()), ruleset)) == []


def test_each_certificate_rule_alerts_once() -> None:
    ruleset = rules('tls.cert_subject; content:"evil";')
    assert sids(inspect(session(server_flight(), 5), ruleset)) == [1]


def test_tls13_certificates_are_encrypted() -> None:
    """A TLS 1.3 server sends ChangeCipherSpec and then only encrypted records."""
    flight = _record(22, server_hello()) + _record(20, b"\x01") + _record(23, bytes(300))
    assert sids(inspect(session(flight), rules('tls.cert_subject; content:"e";'))) == []


def test_ja3_of_the_client_hello() -> None:
    hello = client_hello("evil.example")
    text = "771,4865,0-23,,"
    assert ja3_client(hello[9:]) == text
    digest = hashlib.md5(text.encode()).hexdigest()
    ruleset = rules(
        f'ja3.hash; content:"{digest}";',
        f'ja3_hash; content:"{digest}";',
        'ja3.string; content:"771,4865,0-23";',
        'flow:to_client; ja3.hash; content:"0";',
        'ja3.hash; content:"e7d705a3286e19ea42f587b344ee6865";',
    )
    assert sorted(sids(inspect(session(server_flight()), ruleset))) == [1, 2, 3]


def test_ja3_leaves_grease_values_out() -> None:
    suites = b"\x0a\x0a\x13\x01\xc0\x2f"
    extensions = (
        b"\x1a\x1a\x00\x00"
        + b"\x00\x0a\x00\x06\x00\x04\x2a\x2a\x00\x1d"  # supported groups: GREASE, x25519
        + b"\x00\x0b\x00\x02\x01\x00"  # point formats: uncompressed
    )
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + len(suites).to_bytes(2, "big")
        + suites
        + b"\x01\x00"
        + len(extensions).to_bytes(2, "big")
        + extensions
    )
    assert ja3_client(body) == "771,4865-49199,10-11,29,0"
    assert all(is_grease(v) for v in (0x0A0A, 0x1A1A, 0xFAFA))
    assert not any(is_grease(v) for v in (0x0A0B, 0x1A0A, 0x0000))


def test_ja3s_of_the_server_hello() -> None:
    assert ja3_server(server_hello()[4:]) == "771,49199,65281-11"
    digest = hashlib.md5(b"771,49199,65281-11").hexdigest()
    ruleset = rules(
        f'ja3s.hash; content:"{digest}";',
        'ja3s.string; content:"771,49199,65281-11"; endswith;',
        'flow:to_server; ja3s.string; content:"771";',
    )
    assert sorted(sids(inspect(session(server_flight()), ruleset))) == [1, 2]


def test_the_handshake_is_followed_only_when_a_rule_reads_it() -> None:
    quiet = engine(rules('tls.sni; content:"evil";'))
    assert quiet._follow is None or quiet._follow.tls is None
    errors: Errors = {}
    followed = engine(rules('tls.cert_subject; content:"nomatch";'))
    for ts, data, link in frames(session(server_flight())):
        followed.process(ts, data, link)
    errors = followed.stats.errors
    assert followed._follow is not None and followed._follow.tls is not None
    assert not errors.get("tls.bad_certificate")
    # once the certificate is read, the server's encrypted records take the fast path
    assert followed.stats.fast >= 1
    assert followed._follow.tls.streams.held == 0


def test_a_corrupt_certificate_is_counted() -> None:
    flight = _record(22, server_hello()) + _record(22, certificate_message((b"\x30\x03abc",)))
    eng = engine(rules('tls.cert_subject; content:"x";'))
    alerts = [a for f in frames(session(flight)) for a in eng.process(*f)]
    assert alerts == []
    assert eng.stats.errors.get("tls.bad_certificate") == 1


@pytest.mark.parametrize("seed", range(4))
def test_seeded_fuzz_of_the_handshake_never_raises(seed: int) -> None:
    """Cut, truncated and corrupted handshakes: counted or ignored, never an exception, and
    the handshake state stays within its bounds."""
    rng = random.Random(seed)
    ruleset = rules(
        'tls.cert_subject; content:"CN=";',
        'ja3.hash; content:"a";',
        'ja3s.string; content:"7";',
        'tls.certs; content:"|30|";',
    )
    eng = engine(ruleset)
    flight = server_flight()
    hello = client_hello("fuzz.example")
    for i in range(60):
        data = bytearray(flight)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        packets = session(bytes(data) or b"\x16", rng.randrange(1, 9), hello)
        for pkt in packets:
            pkt[TCP].sport = 20000 + i
        for ts, raw_frame, link in frames(packets):
            eng.process(ts, raw_frame, link)
    assert eng._follow is not None and eng._follow.tls is not None
    assert eng._follow.tls.streams.held <= 64 * 1024 * 60
    assert len(eng._follow.tls._states) <= 2 * 60


def test_fast_and_full_path_agree() -> None:
    ruleset = rules(
        'flow:to_client; tls.cert_subject; content:"evil";',
        'ja3.string; content:"771,";',
        'ja3s.string; content:"771,";',
        'flow:to_client; content:"|17 03 03|"; depth:3;',
    )
    packets = session(server_flight(), 4)
    fast = sids(inspect(packets, ruleset))
    full = sids(inspect(packets, ruleset, fast_path=False))
    assert sorted(fast) == sorted(full) == [1, 2, 3, 4]


@pytest.mark.parametrize("value", ["yesterday", "2015-13", "", "2015<>"])
def test_bad_certificate_dates_are_refused(value: str) -> None:
    with pytest.raises(RuleFileError, match=r"^test.rules:1: "):
        engine(rules(f"tls_cert_notafter:{value};"))


def test_a_certificate_corrupted_anywhere_is_counted_never_raised() -> None:
    """The server's certificate with a few bytes changed (names of an unknown string type,
    a bad version, a negative serial among them): its buffers or a count of
    ``tls.bad_certificate``, never an exception."""
    leaf, _ = chain()
    rng = random.Random(4)
    counted = 0
    for _ in range(1500):
        data = bytearray(leaf)
        for _ in range(3):
            data[rng.randrange(len(data))] = rng.randrange(256)
        errors: Errors = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = cert_buffers([bytes(data)], SERVER_BUFFERS, 1.7e9, errors)
        counted += errors.get("tls.bad_certificate", 0)
        assert errors or "tls.cert_subject" in found
    assert counted > 10


def test_a_negative_serial_is_written_as_its_der_bytes() -> None:
    assert [serial_text(v) for v in (-1, -128, -129, 128)] == ["FF", "80", "FF:7F", "00:80"]


def test_a_whole_client_hello_is_read_as_the_records_walk_reads_it() -> None:
    """A client's first segment that is one record holding one whole ClientHello is read
    without walking records and messages: the same buffers, the same answer, the same state
    after, as the walk gives; segments of any other shape (cut, two records, a record
    holding more, lengths off, another message) take the walk."""
    from types import SimpleNamespace

    from appliance.inspect.flow import Flow
    from appliance.inspect.tlsinfo import TlsHandshakes

    rng = random.Random(4)
    hellos = [client_hello(f"h{i}.example") for i in range(6)]
    shapes: list[bytes] = []
    for hello in hellos:
        shapes += [hello, hello[:-3], hello + hello, hello + b"\x17\x03\x03\x00\x01x"]
        for _ in range(12):
            raw = bytearray(hello)
            spot = rng.choice((0, 1, 3, 4, 5, 6, 7, 8, rng.randrange(len(raw))))
            raw[spot] = rng.choice((0, 1, 2, 3, 22, 0xFF, rng.randrange(256)))
            shapes.append(bytes(raw))
    whole = 0
    for wanted in (
        {"ja3.hash", "ja3.string", "tls.version"},
        {"ja3.hash"},
        {"tls.version", "tls.cert_subject"},
        {"ja3s.hash"},
        {"tls.version", "tls:state"},
    ):
        for n, payload in enumerate(shapes):
            got: list[object] = []
            for whole_hellos in (True, False):
                tls = TlsHandshakes(wanted)
                tls.whole_hellos = whole_hellos and tls.whole_hellos
                flow = Flow(bytes([n % 256, n // 256]) * 6, b"r" * 12, 6, 0.0)
                layer = SimpleNamespace(payload=payload, seq=1000)
                buffers: dict[str, bytes] = {}
                errors: Errors = {}
                done = tls.feed(0.0, flow, True, layer, buffers, errors)  # type: ignore[arg-type]
                later: dict[str, bytes] = {}
                tls.known(flow, True, later)
                got.append((done, buffers, errors, tls.pending(flow, True), later))
            assert got[0] == got[1], (wanted, payload.hex())
            whole += payload in hellos
    assert whole >= 5 * len(hellos)  # the whole hellos (and mutations that changed nothing)
