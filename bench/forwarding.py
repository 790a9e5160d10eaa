"""Forwarding through a router namespace: the appliance's table against an empty ruleset
(the reference, measured in the same run) and against 1,000 linear ``ip saddr X drop``
rules; with a kernel that has flowtables, also the appliance's table with
``[defaults].offload``.

    client (10.89.1.2) -- r0 [router] r1 -- server (10.89.2.2)   three throw-away namespaces

The appliance's table is the one ``appliance apply`` puts in the router for a profile with
a blocklist of ``--elements`` addresses (an interval set, checked first on every new flow),
sampling on (``[inspect]``, 8 packets a flow to NFLOG; nobody reads them here) and one
accept rule from the client's zone to the server's. Rulesets take turns, ``--rounds``
times; each figure is the best round. For each:

- UDP: packets per second the server received, from ``--senders`` iperf3 clients (64-byte
  payloads, no rate limit), each to its own iperf3 server, for ``--seconds``;
- TCP: one iperf3 stream, bits per second received;
- latency: request/answer round trips of one TCP connection (``--pings``), p50 and p99.

The generator's own ceiling: the same UDP senders to an address of the router itself
(nothing forwarded). Needs iperf3 (Debian package). Prints the table and appends it to
bench/RESULTS.md (unless --no-append).

    sudo .venv/bin/python -m bench.forwarding [--elements 100000] [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
BOUND = 120  # seconds: any one command of the bench
CLIENT, SERVER, ROUTER_CLIENT_SIDE = "10.89.1.2", "10.89.2.2", "10.89.1.1"
BASE_PORT = 5301

PROFILE = """
version = 1
name = "forwarding-bench"

[defaults]
offload = OFFLOAD

[zones.client]
interfaces = ["r0"]

[zones.server]
interfaces = ["r1"]

[sets.blocklist]
type = "ipv4_addr"
interval = true
elements_file = "ELEMENTS"

[[rules]]
name = "blocklist"
from = "client"
to = "any"
saddr = ["@blocklist"]
action = "drop"

[[rules]]
name = "client-server"
from = "client"
to = "server"
action = "accept"

[inspect]
mode = "sample"
sample_packets = 8
"""

LINEAR_RULES = 1000

PING_SERVER = """
import socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5300))
srv.listen(8)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(64):
        conn.sendall(data)
    conn.close()
"""

PING_CLIENT = """
import json, socket, sys, time
c = socket.create_connection((sys.argv[1], 5300), timeout=10)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    c.sendall(b"x")
    c.recv(1)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


@dataclass(frozen=True)
class Net:
    client: str
    router: str
    server: str


def run(*args: str, input: str | None = None) -> str:
    return subprocess.run(
        list(args), input=input, capture_output=True, text=True, check=True, timeout=BOUND
    ).stdout


def in_ns(ns: str, *args: str, input: str | None = None) -> str:
    return run("ip", "netns", "exec", ns, *args, input=input)


@contextlib.contextmanager
def topology() -> Iterator[Net]:
    base = f"apfwd-{uuid.uuid4().hex[:6]}"
    net = Net(f"{base}-c", f"{base}-r", f"{base}-s")
    made: list[str] = []
    try:
        for ns in (net.client, net.router, net.server):
            run("ip", "netns", "add", ns)
            made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, link, prefix in ((net.client, "r0", "10.89.1"), (net.server, "r1", "10.89.2")):
            run(
                "ip",
                "-n",
                net.router,
                "link",
                "add",
                link,
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                ns,
            )
            run("ip", "-n", net.router, "addr", "add", f"{prefix}.1/24", "dev", link)
            run("ip", "-n", net.router, "link", "set", link, "up")
            run("ip", "-n", ns, "addr", "add", f"{prefix}.2/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "route", "add", "default", "via", f"{prefix}.1")
        in_ns(net.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield net
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=BOUND)


@contextlib.contextmanager
def servers(net: Net, senders: int, iperf3: bool) -> Iterator[None]:
    """iperf3 servers (one per sender) in the server and the router namespaces, and the
    echo server of the latency probe; all stopped afterwards."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for ns in (net.server, net.router) if iperf3 else ():
            for i in range(senders + 1):
                procs.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", ns, "iperf3", "-s", "-p", str(BASE_PORT + i)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                )
        echo = subprocess.Popen(
            ["ip", "netns", "exec", net.server, sys.executable, "-c", PING_SERVER],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(echo)
        assert echo.stdout is not None and echo.stdout.readline().strip() == "listening"
        time.sleep(0.5)  # the iperf3 servers bind (no readiness signal of their own)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


UDP_ARGS = ("-u", "-b", "0", "-l", "64")  # no rate limit, 64-byte payloads


def ns_exec(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns]


def udp_pps(net: Net, target: str, senders: int, seconds: int) -> float:
    """Packets per second received at ``target`` from ``senders`` parallel iperf3 clients."""
    udp = [*UDP_ARGS, "-t", str(seconds), "-J"]
    procs = [
        subprocess.Popen(
            [*ns_exec(net.client), "iperf3", "-c", target, "-p", str(BASE_PORT + i), *udp],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(senders)
    ]
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + BOUND)
        end = json.loads(out)["end"]["sum"]
        total += (end["packets"] - end["lost_packets"]) / end["seconds"]
    return total


def tcp_bps(net: Net, seconds: int, port: int) -> float:
    out = in_ns(net.client, "iperf3", "-c", SERVER, "-p", str(port), "-t", str(seconds), "-J")
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


# Without iperf3 (the QEMU guests): senders in Python, and the packets that arrive counted
# by the kernel in the target's namespace (before conntrack, then dropped), so a slow
# receiver never hides what the path delivered.
UDP_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(5)
s.send(b"hello")  # answered: the flow is established (and can be offloaded)
s.recv(16)
payload, sent, end = b"x" * 64, 0, time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    for _ in range(256):
        try:
            s.send(payload)
        except OSError:
            pass
    sent += 256
print(sent)
"""

COUNTER = (
    "table inet apfwdcount {\n  chain c {\n    type filter hook prerouting priority -300;\n"
    f"    udp dport {BASE_PORT}-{BASE_PORT + 99} udp length 72 counter drop\n  }}\n}}\n"
)

UDP_HELLO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(64)
    s.sendto(data, peer)
"""

TCP_SINK = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(1)
print("listening", flush=True)
conn, _ = srv.accept()
total = 0
while data := conn.recv(1 << 18):
    total += len(data)
print(total, flush=True)
"""

TCP_SOURCE = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
chunk, end = b"x" * (1 << 16), time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    c.sendall(chunk)
c.close()
"""


def udp_pps_python(net: Net, target_ns: str, target: str, senders: int, seconds: int) -> float:
    """Packets per second arriving in ``target_ns`` from ``senders`` Python senders."""
    in_ns(target_ns, "nft", "-f", "-", input=COUNTER)

    def sender(i: int) -> list[str]:
        return [target, str(BASE_PORT + i), str(seconds)]

    hellos = [
        subprocess.Popen(
            [*ns_exec(target_ns), sys.executable, "-c", UDP_HELLO, str(BASE_PORT + i)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(senders)
    ]
    try:
        for hello in hellos:
            assert hello.stdout is not None and hello.stdout.readline().strip() == "ready"
        procs = [
            subprocess.Popen(
                [*ns_exec(net.client), sys.executable, "-c", UDP_SENDER, *sender(i)],
                stdout=subprocess.DEVNULL,
                text=True,
            )
            for i in range(senders)
        ]
        for proc in procs:
            proc.wait(timeout=seconds + BOUND)
        listing = json.loads(in_ns(target_ns, "nft", "-j", "list", "table", "inet", "apfwdcount"))
    finally:
        for hello in hellos:
            hello.kill()
            hello.wait()
        subprocess.run(
            [*ns_exec(target_ns), "nft", "delete", "table", "inet", "apfwdcount"],
            check=False,
            capture_output=True,
        )
    packets = 0
    for obj in listing["nftables"]:
        for expr in obj.get("rule", {}).get("expr", []):
            if "counter" in expr:
                packets += int(expr["counter"]["packets"])
    return packets / seconds


def tcp_bps_python(net: Net, seconds: int, port: int) -> float:
    sink = subprocess.Popen(
        [*ns_exec(net.server), sys.executable, "-c", TCP_SINK, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "listening"
        in_ns(net.client, sys.executable, "-c", TCP_SOURCE, SERVER, str(port), str(seconds))
        received = int(sink.stdout.readline().strip())
    finally:
        sink.kill()
        sink.wait()
    return received * 8 / seconds


def latency(net: Net, pings: int) -> tuple[float, float]:
    times = json.loads(in_ns(net.client, sys.executable, "-c", PING_CLIENT, SERVER, str(pings)))
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def appliance(net: Net, profile: Path) -> None:
    run(sys.executable, "-m", "appliance", "--netns", net.router, "apply", str(profile))


def clear(net: Net) -> None:
    in_ns(net.router, "nft", "flush", "ruleset")
    subprocess.run(
        ["ip", "netns", "exec", net.router, "conntrack", "-F"],
        capture_output=True,
        check=False,
    )


def linear(net: Net) -> None:
    rules = "\n".join(
        f"    ip saddr 198.18.{i // 250}.{i % 250 + 1} drop" for i in range(LINEAR_RULES)
    )
    script = (
        "table inet linear {\n  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        f"{rules}\n  }}\n}}\n"
    )
    in_ns(net.router, "nft", "-f", "-", input=script)


def write_profile(work: Path, elements: int, offload: bool) -> Path:
    lines = (f"100.{64 + i // 65536 % 64}.{i // 256 % 256}.{i % 256}" for i in range(elements))
    blocklist = work / "blocklist.txt"
    if not blocklist.exists():
        blocklist.write_text("\n".join(lines) + "\n")
    text = PROFILE.replace("ELEMENTS", str(blocklist))
    path = work / ("offload.toml" if offload else "table.toml")
    path.write_text(text.replace("OFFLOAD", "true" if offload else "false"))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument(
        "--generator",
        choices=("iperf3", "python"),
        default="iperf3" if shutil.which("iperf3") else "python",
        help="traffic generator (default: iperf3 where installed)",
    )
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.forwarding: needs root (network namespaces)", file=sys.stderr)
        return 1
    if args.generator == "iperf3" and shutil.which("iperf3") is None:
        print("bench.forwarding: needs iperf3 (apt-get install iperf3)", file=sys.stderr)
        return 1
    iperf3 = args.generator == "iperf3"

    def udp(net: Net, forwarded: bool) -> float:
        target = SERVER if forwarded else ROUTER_CLIENT_SIDE
        if iperf3:
            return udp_pps(net, target, args.senders, args.seconds)
        target_ns = net.server if forwarded else net.router
        return udp_pps_python(net, target_ns, target, args.senders, args.seconds)

    def tcp(net: Net) -> float:
        port = BASE_PORT + args.senders
        return (tcp_bps if iperf3 else tcp_bps_python)(net, args.seconds, port)

    from appliance.probe import has_flowtable

    with tempfile.TemporaryDirectory(prefix="apfwd-") as tmp:
        work = Path(tmp)
        setups = {
            "empty ruleset (reference)": lambda net: None,
            f"appliance table ({args.elements:,} blocklist elements, sampling)": lambda net: (
                appliance(net, write_profile(work, args.elements, offload=False))
            ),
            f"{LINEAR_RULES} linear `ip saddr X drop` rules": linear,
        }
        if has_flowtable():
            setups["appliance table with `offload = true`"] = lambda net: appliance(
                net, write_profile(work, args.elements, offload=True)
            )
        figures: dict[str, dict[str, list[float]]] = {
            name: {"pps": [], "bps": [], "p50": [], "p99": []} for name in setups
        }
        ceiling: list[float] = []
        with topology() as net, servers(net, args.senders, iperf3):
            for _round in range(args.rounds):
                ceiling.append(udp(net, forwarded=False))
                for name, setup in setups.items():
                    clear(net)
                    setup(net)
                    got = figures[name]
                    got["pps"].append(udp(net, forwarded=True))
                    got["bps"].append(tcp(net))
                    p50, p99 = latency(net, args.pings)
                    got["p50"].append(p50)
                    got["p99"].append(p99)
                    print(
                        f"round {_round + 1}: {name}: {got['pps'][-1]:,.0f} UDP packets/s",
                        file=sys.stderr,
                    )
                clear(net)
    reference = figures["empty ruleset (reference)"]
    ref_pps, ref_bps = max(reference["pps"]), max(reference["bps"])
    lines = [
        "| ruleset in the router | UDP 64 B received | ratio | TCP | ratio | RTT p50 | RTT p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, got in figures.items():
        pps, bps = max(got["pps"]), max(got["bps"])
        lines.append(
            f"| {name} | {pps:,.0f} /s | {pps / ref_pps:.2f}x | {bps / 1e9:.2f} Gbit/s "
            f"| {bps / ref_bps:.2f}x | {min(got['p50']) * 1e6:.0f} us "
            f"| {min(got['p99']) * 1e6:.0f} us |"
        )
    lines.append("")
    lines.append(
        f"The generator's ceiling ({args.senders} {args.generator} senders to the router itself, "
        f"nothing forwarded): {max(ceiling):,.0f} packets/s."
    )
    print("\n".join(lines))
    if not args.no_append:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        command = (
            f"sudo .venv/bin/python -m bench.forwarding --elements {args.elements} "
            f"--rounds {args.rounds} --seconds {args.seconds} --senders {args.senders} "
            f"--generator {args.generator}"
        )
        with RESULTS.open("a") as out:
            out.write(
                f"\n## Forwarding through a router namespace ({stamp}, load average "
                f"{os.getloadavg()[0]:.1f}, kernel {os.uname().release})\n\n`{command}`\n\n"
                + "\n".join(lines)
                + "\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
