"""A large rule set of ET Open's shape, made up: how the engine's cost grows with the rules.

ET Open itself is not shipped with the appliance. To see where per-packet time goes as a
rule set grows (thousands of rules in one group), this writes ``count`` rules, from a seed,
in about the proportions of ET Open's enabled rules by kind: HTTP client rules (method, URI
with a fast pattern, user agent, headers, ``pcre`` in about half), rules on web servers'
URIs, HTTP response bodies (``file_data``), DNS queries, TLS SNI, certificates and JA3, TCP
payload rules (``dsize``, anchored byte patterns, ``distance``), ``flowbits`` pairs (set on
a request, checked on the response) and rules without a positive content (``urilen``,
``dsize``, flags), which every packet of their group meets. Their patterns are made-up
words, so few match the benchmark's traffic; about one rule in thirty takes a fast pattern
common in real traffic (``.php``, ``Mozilla/5.0``, ``/index``, ``www.``), whose candidates
are then checked in full and fail on a later content, as many of a real set's do.

    .venv/bin/python bench/synthetic_rules.py [--count 15000] [--seed 1] [--kept N] > SYNTH
    .venv/bin/python bench/inspect_throughput.py --rules SYNTH ...

Figures measured with it are the engine's scaling, not ET Open's: they are never reported as
ET Open's.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable

SYLLABLES = str.split(
    "ka ro mi tu ne sa vo li be za qu ix or un el da fi go hy ju "
    "pra stel vin dor kul mex tor yan wek zib plo gra"
)
# fast patterns common in real traffic: their candidates are checked in full, and fail
COMMON = ("/index", ".php", "Mozilla/5.0", "www.", "/api/", "Host: ", "GET /", ".html")


def word(rng: random.Random, parts: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts))


def domain(rng: random.Random) -> str:
    return f"{word(rng)}.{rng.choice(('com', 'net', 'top', 'xyz', 'ru', 'info'))}"


def http_client(rng: random.Random) -> str:
    method = rng.choice(("GET", "POST", "POST"))
    uri = f"/{word(rng, 2)}/{word(rng)}.{rng.choice(('php', 'asp', 'jsp', 'cgi'))}"
    fast = rng.choice(COMMON[:2]) if rng.random() < 0.03 else uri
    body = f'http.method; content:"{method}"; http.uri; content:"{fast}"; fast_pattern; '
    if fast != uri:
        body += f'content:"{uri}"; '
    elif rng.random() < 0.3:
        body += "endswith; "
    if rng.random() < 0.5:
        body += f'http.user_agent; content:"{word(rng, 2)}/{rng.randrange(1, 9)}.0"; '
    if rng.random() < 0.4:
        body += f'http.header; content:"X-{word(rng, 2)}|3a 20|"; '
    if rng.random() < 0.45:
        body += f'pcre:"/^\\/{word(rng, 2)}\\/[a-z0-9]{{8,16}}\\.(php|asp)$/U"; '
    if rng.random() < 0.3:
        body += 'http.header_names; content:!"Referer"; '
    return (
        'alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"SYNTH MALWARE checkin {sid}"; '
        f"flow:established,to_server; {body}"
        "reference:url,example.com/{sid}; classtype:trojan-activity; sid:{sid}; rev:1; "
        "metadata:created_at 2024_01_01;)"
    )


def web_server(rng: random.Random) -> str:
    script = f"/{word(rng, 2)}.{rng.choice(('cgi', 'php', 'jsp', 'action'))}"
    fast = rng.choice(COMMON[:2]) if rng.random() < 0.03 else script
    body = f'http.uri; content:"{fast}"; nocase; '
    if fast != script:
        body += f'content:"{script}"; nocase; '
    body += f'content:"{word(rng, 2)}="; nocase; distance:0; '
    if rng.random() < 0.3:
        body += 'content:"|27|"; distance:0; '
    if rng.random() < 0.5:
        body += f'pcre:"/{word(rng, 2)}=[^&]*(union|select)/Ui"; '
    return (
        'alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"SYNTH WEB_SPECIFIC_APPS {sid}"; '
        f'flow:established,to_server; http.method; content:"GET"; {body}'
        "classtype:web-application-attack; sid:{sid}; rev:1;)"
    )


def http_response(rng: random.Random) -> str:
    body = f'file_data; content:"{word(rng, 4)}"; '
    if rng.random() < 0.4:
        body += f'content:"{word(rng, 2)}("; distance:0; '
    if rng.random() < 0.3:
        body = 'http.stat_code; content:"200"; ' + body
    return (
        'alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"SYNTH EXPLOIT_KIT landing {sid}"; '
        f"flow:established,to_client; {body}"
        "classtype:trojan-activity; sid:{sid}; rev:1;)"
    )


def dns_query(rng: random.Random) -> str:
    name = domain(rng)
    tail = rng.choice(("isdataat:!1,relative; ", "endswith; ", 'dotprefix; content:".x"; '))
    if tail.startswith("dotprefix"):
        return (
            'alert dns $HOME_NET any -> any any (msg:"SYNTH DNS query {sid}"; dns.query; '
            f'dotprefix; content:".{name}"; nocase; endswith; '
            "classtype:bad-unknown; sid:{sid}; rev:1;)"
        )
    return (
        'alert dns $HOME_NET any -> any any (msg:"SYNTH DNS query {sid}"; dns.query; '
        f'content:"{name}"; nocase; {tail}classtype:bad-unknown; sid:{{sid}}; rev:1;)'
    )


def tls_sni(rng: random.Random) -> str:
    return (
        'alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"SYNTH TLS SNI {sid}"; '
        f'flow:established,to_server; tls.sni; content:"{domain(rng)}"; endswith; nocase; '
        "classtype:bad-unknown; sid:{sid}; rev:1;)"
    )


def tcp_payload(rng: random.Random) -> str:
    magic = " ".join(f"{rng.randrange(256):02x}" for _ in range(4))
    body = f'content:"|{magic}|"; depth:4; '
    if rng.random() < 0.5:
        body += f'content:"{word(rng, 2)}"; distance:0; '
    if rng.random() < 0.3:
        body = f"dsize:<{rng.choice((64, 128, 300))}; " + body
    if rng.random() < 0.15:
        body += "byte_test:2,>,1000,4,relative; "
    port = rng.choice(("any", "any", "[443,8443]", "$HTTP_PORTS", "4444"))
    return (
        f'alert tcp $HOME_NET any -> $EXTERNAL_NET {port} (msg:"SYNTH MALWARE beacon {{sid}}"; '
        f"flow:established,to_server; {body}classtype:trojan-activity; sid:{{sid}}; rev:1;)"
    )


def http_host(rng: random.Random) -> str:
    fast = "www." if rng.random() < 0.03 else domain(rng)
    extra = "" if fast != "www." else f'content:"{domain(rng)}"; '
    return (
        'alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"SYNTH POLICY host {sid}"; '
        f'flow:established,to_server; http.host; content:"{fast}"; {extra}'
        "classtype:policy-violation; sid:{sid}; rev:1;)"
    )


def flowbits_pair(rng: random.Random) -> str:
    """Two rules: one sets a flowbit on a request (no alert), the other alerts on the
    response of a flow that has it."""
    bit = f"SYNTH.{word(rng, 2)}"
    uri = f"/{word(rng, 2)}.{rng.choice(('php', 'aspx', 'jsp'))}"
    return (
        'alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"SYNTH INFO set {sid}"; '
        f'flow:established,to_server; http.uri; content:"{uri}"; flowbits:set,{bit}; '
        "flowbits:noalert; classtype:misc-activity; sid:{sid}; rev:1;)\n"
        'alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"SYNTH MALWARE got {sid2}"; '
        f'flow:established,to_client; flowbits:isset,{bit}; file_data; content:"{word(rng, 3)}"; '
        "classtype:trojan-activity; sid:{sid2}; rev:1;)"
    )


def plain_http(rng: random.Random) -> str:
    """No positive content: checked on every request of its group (a plain rule)."""
    return (
        'alert http $HOME_NET any -> $EXTERNAL_NET any (msg:"SYNTH POLICY long URI {sid}"; '
        f"flow:established,to_server; urilen:>{rng.randrange(300, 2000)}; "
        'http.header_names; content:!"Referer"; classtype:policy-violation; sid:{sid}; rev:1;)'
    )


def plain_tcp(rng: random.Random) -> str:
    """No content: SYNs carrying data, small segments to a port."""
    if rng.random() < 0.5:
        return (
            'alert tcp $EXTERNAL_NET any -> $HOME_NET any (msg:"SYNTH SCAN SYN data {sid}"; '
            f"flags:S,12; dsize:>{rng.randrange(0, 100)}; classtype:attempted-recon; "
            "sid:{sid}; rev:1;)"
        )
    return (
        f"alert tcp $HOME_NET any -> $EXTERNAL_NET {rng.randrange(1024, 65535)} "
        '(msg:"SYNTH MALWARE small beacon {sid}"; flow:established,to_server; '
        f"dsize:{rng.randrange(4, 40)}; classtype:trojan-activity; sid:{{sid}}; rev:1;)"
    )


def tls_cert(rng: random.Random) -> str:
    """The server's certificate (its handshake followed) or a JA3 hash."""
    if rng.random() < 0.5:
        return (
            'alert tls $EXTERNAL_NET any -> $HOME_NET any (msg:"SYNTH TLS cert {sid}"; '
            f'flow:established,to_client; tls.cert_subject; content:"CN={domain(rng)}"; '
            "classtype:trojan-activity; sid:{sid}; rev:1;)"
        )
    md5 = "".join(rng.choice("0123456789abcdef") for _ in range(32))
    return (
        'alert tls $HOME_NET any -> $EXTERNAL_NET any (msg:"SYNTH JA3 {sid}"; '
        f'ja3.hash; content:"{md5}"; classtype:trojan-activity; sid:{{sid}}; rev:1;)'
    )


KINDS: tuple[tuple[Callable[[random.Random], str], int], ...] = (
    (http_client, 34),
    (web_server, 14),
    (http_response, 6),
    (dns_query, 11),
    (tls_sni, 5),
    (tcp_payload, 13),
    (http_host, 7),
    (flowbits_pair, 5),
    (plain_http, 2),
    (plain_tcp, 2),
    (tls_cert, 1),
)


def kept_rule(rng: random.Random) -> str:
    """A rule reading the stream sizes or the TLS version a hello gave, with a payload
    pattern (ET Open has 25 ``stream_size`` and 4 ``tls.version`` rules of this kind)."""
    pattern = f"{word(rng, 3)}"
    if rng.random() < 0.8:
        side = rng.choice(("server", "client", "both", "either"))
        test = f"stream_size:{side},{rng.choice(('<', '>', '>='))},{rng.randrange(2, 5000)}"
        direction = rng.choice(("to_server", "to_client"))
        return (
            f'alert tcp any any -> any any (msg:"SYNTH INFO stream size {{sid}}"; '
            f'flow:established,{direction}; {test}; content:"{pattern}"; '
            "classtype:misc-activity; sid:{sid}; rev:1;)"
        )
    version = rng.choice(("1.0", "1.1", "1.2", "1.3"))
    return (
        f'alert tls any any -> any any (msg:"SYNTH POLICY TLS {version} {{sid}}"; '
        f'tls.version:{version}; content:"{pattern}"; classtype:policy-violation; '
        "sid:{sid}; rev:1;)"
    )


def rules(count: int, seed: int = 1, first_sid: int = 3_000_000, kept: int = 0) -> list[str]:
    """``count`` rules from ``seed``, then ``kept`` rules of ``kept_rule`` (from their own
    seed: the first ``count`` are the same with or without them)."""
    made = _rules(count, seed, first_sid)
    other = random.Random(seed + 1)
    sid = first_sid + count + 10
    made += [kept_rule(other).replace("{sid}", str(sid + i)) for i in range(kept)]
    return made


def _rules(count: int, seed: int, first_sid: int) -> list[str]:
    rng = random.Random(seed)
    makers = [maker for maker, weight in KINDS for _ in range(weight)]
    made: list[str] = []
    sid = first_sid
    while len(made) < count:
        text = rng.choice(makers)(rng).replace("{sid}", str(sid)).replace("{sid2}", str(sid + 1))
        for line in text.split("\n")[: count - len(made)]:
            made.append(line)
            sid += 1
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=15_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--kept",
        type=int,
        default=0,
        help="also this many rules reading the stream sizes or a TLS version (ET Open: 29)",
    )
    args = parser.parse_args(argv)
    sys.stdout.write("\n".join(rules(args.count, args.seed, kept=args.kept)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
