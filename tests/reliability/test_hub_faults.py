"""Hub faults: a hub that never answers, resets, answers with an endless body, drips, sends
a gzip bomb, rolls the version back, serves an expired (frozen) bundle, or fails the bundle
once after its new signature. Nothing is applied that should not be, the daemon stays
under half a core while it lasts, and a good hub is followed again afterwards: after resets,
by the first poll once it is back; after a black hole (packets dropped, at boot or at run
time), with status, metrics, reloads and SIGTERM answered while a poll hangs."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.storage import atomic_write
from appliance.sync import keys
from tests.conftest import REPO
from tests.daemon.conftest import Daemon, wait_until
from tests.daemon.test_hub import PATH, Hub, build, hub_status, local_profile
from tests.reliability.conftest import SOAK

pytestmark = pytest.mark.root

Start = Callable[..., Daemon]

PORT = 8089
POLL = 1.0
CPU_WINDOW = 10.0 if SOAK else 3.0  # seconds the daemon's CPU time is measured over
RECOVERED_WITHIN = 60.0  # generous: a wait for the event; the measured time is printed

# Serves the bundle directory, misbehaving as the first line of the mode file says.
FAULT_SERVER = r"""
import gzip, os, socket, struct, sys, threading, time
port, root, mode_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
bomb = gzip.compress(b"\0" * (64 << 20), 9)
failed_once = set()
def mode():
    with open(mode_file) as f:
        return f.read().strip()
def reply(conn, status, body, extra=b""):
    conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n%s\r\n"
                 % (status, len(body), extra) + body)
def serve(conn):
    try:
        conn.settimeout(30)
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        name = request.split(b" ")[1].split(b"?")[0].rsplit(b"/", 1)[-1].decode()
        m = mode()
        if m == "silent":
            time.sleep(120)
            return
        if m == "rst":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if m == "endless":
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            end = time.monotonic() + 120
            while time.monotonic() < end:
                conn.sendall(b"x" * 65536)
            return
        if m == "drip":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 120\r\n\r\n")
            for _ in range(120):
                conn.sendall(b"x")
                time.sleep(1)
            return
        if m == "gzip":
            reply(conn, 200, bomb, b"Content-Encoding: gzip\r\n")
            return
        if m == "fail-bundle-once" and name == "bundle.json" and name not in failed_once:
            failed_once.add(name)
            reply(conn, 404, b"")
            return
        try:
            with open(os.path.join(root, name), "rb") as f:
                body = f.read()
        except OSError:
            reply(conn, 404, b"")
            return
        reply(conn, 200, body)
    except OSError:
        pass
    finally:
        conn.close()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

TRANSPORT = ["silent", "rst", "endless", "drip", "gzip"]
# what status shows for each fault (a hub that drips or never answers is unreachable once
# the exchange's deadline passes)
SHOWN = {
    "silent": "unreachable",
    "rst": "unreachable",
    "endless": "too_large",
    "drip": "unreachable",
    "gzip": "malformed",
    "rollback": "rollback",
    "freeze": "expired",
}


class FaultHub:
    def __init__(self, ns: str, root: Path) -> None:
        self.hub = Hub(ns, root, keys.generate())
        self.mode_file = root / "mode"
        self.set("good")
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                FAULT_SERVER,
                str(PORT),
                str(self.hub.directory),
                str(self.mode_file),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "listening"

    def set(self, mode: str) -> None:
        # replaced whole: the server never reads a half-written (empty: "good") mode
        atomic_write(self.mode_file, (mode + "\n").encode(), 0o644)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def fault_hub(netns: str, tmp_path: Path) -> Iterator[FaultHub]:
    hub = FaultHub(netns, tmp_path / "bundles")
    try:
        yield hub
    finally:
        hub.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_share(daemon: Daemon, seconds: float) -> float:
    assert daemon.proc is not None
    start_cpu, start = _cpu_seconds(daemon.proc.pid), time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not a wait for an event
    return (_cpu_seconds(daemon.proc.pid) - start_cpu) / (time.monotonic() - start)


@pytest.mark.parametrize(
    "fault",
    [*TRANSPORT, "rollback", "freeze", "fail-bundle-once"],
)
def test_a_hub_fault_applies_nothing_costs_little_and_a_good_hub_is_followed_again(
    netns: str, fault_hub: FaultHub, start_daemon: Start, tmp_path: Path, fault: str
) -> None:
    hub = fault_hub.hub
    pub = tmp_path / "hub.pub"
    pub.write_text(hub.key.public.encode() + "\n")
    profile = tmp_path / "profile.toml"
    profile.write_text(
        f'version = 1\nname = "edge-1"\n\n[hub]\nurl = "http://127.0.0.1:{PORT}/{PATH}/"\n'
        f'trust = ["{pub}"]\npoll = "{POLL:g}s"\ntimeout = "3s"\n'
    )
    hub.publish(build(5))
    daemon = start_daemon(netns, profile)
    wait_until(lambda: hub_status(daemon)["version"] == 5, timeout=30)

    if fault in TRANSPORT:
        fault_hub.set(fault)
        hub.publish(build(6, extra_rule=True))
    elif fault == "rollback":
        hub.publish(build(4, extra_rule=True))
    elif fault == "freeze":
        hub.publish(build(6, extra_rule=True, expires=time.time() - 60))
    else:  # the signature of 6 is fetched, its bundle fails once; then the pair arrives
        fault_hub.set("fail-bundle-once")
        hub.publish(build(6, extra_rule=True))
    share = _cpu_share(daemon, CPU_WINDOW)
    assert share < 0.5, f"daemon used {share:.0%} of a core during {fault}"
    if fault == "fail-bundle-once":  # the version is not skipped
        wait_until(lambda: hub_status(daemon)["version"] == 6, timeout=RECOVERED_WITHIN)
    else:
        wait_until(lambda: hub_status(daemon)["result"] == SHOWN[fault], timeout=30)
        assert hub_status(daemon)["version"] == 5  # nothing applied
        assert daemon.status()["source"] == "hub"
    status = hub_status(daemon)

    fault_hub.set("good")
    hub.publish(build(7))
    started = time.monotonic()
    wait_until(lambda: hub_status(daemon)["version"] == 7, timeout=RECOVERED_WITHIN)
    took = time.monotonic() - started
    print(
        f"{fault}: result {status['result']!r}, CPU {share:.1%} over {CPU_WINDOW:g}s, "
        f"recovered in {took:.2f}s (poll {POLL:g}s)"
    )


RESETS = 6  # failed polls before the hub comes back: the old backoff had grown past 10 s
SCHEDULING_ALLOWANCE = 0.5  # the daemon's own work between stamping a sync and scheduling


def test_after_a_resetting_hub_comes_back_the_first_poll_applies_the_new_version(
    netns: str, fault_hub: FaultHub, start_daemon: Start, tmp_path: Path
) -> None:
    """The hub resets every connection for several polls, then answers again: each poll
    after a failure was scheduled within 1.5 poll intervals of it (the daemon's recorded
    sync time and next poll), and the first poll after the hub is back applies the version
    it offers; the time from recovery to the applied version is printed."""
    hub = fault_hub.hub
    pub = tmp_path / "hub.pub"
    pub.write_text(hub.key.public.encode() + "\n")
    profile = tmp_path / "profile.toml"
    profile.write_text(
        f'version = 1\nname = "edge-1"\n\n[hub]\nurl = "http://127.0.0.1:{PORT}/{PATH}/"\n'
        f'trust = ["{pub}"]\npoll = "{POLL:g}s"\ntimeout = "3s"\n'
    )
    hub.publish(build(5))
    daemon = start_daemon(netns, profile)
    wait_until(lambda: hub_status(daemon)["version"] == 5, timeout=30)
    fault_hub.set("rst")
    hub.publish(build(6, extra_rule=True))
    gaps: dict[float, float] = {}  # failed sync's time -> the next poll it scheduled
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = hub_status(daemon)
        failed = status["syncs"].get("unreachable", 0)
        if status["result"] == "unreachable" and status["next_poll"] is not None:
            gaps[status["last_sync"]] = status["next_poll"] - status["last_sync"]
        if failed >= RESETS and len(gaps) >= 2:
            break
        time.sleep(0.05)
    assert failed >= RESETS, status
    assert len(gaps) >= 2, gaps
    fault_hub.set("good")
    healthy = time.time()
    failed = hub_status(daemon)["syncs"].get("unreachable", 0)
    wait_until(lambda: _applied_at(daemon, 6) is not None, timeout=RECOVERED_WITHIN)
    applied_at = _applied_at(daemon, 6)
    assert applied_at is not None and applied_at >= healthy  # nothing got through the resets
    status = hub_status(daemon)
    longest = max(gaps.values())
    assert longest <= 1.5 * POLL + SCHEDULING_ALLOWANCE, gaps
    # at most one poll was under way when the hub came back; the next one applied
    assert status["syncs"].get("unreachable", 0) <= failed + 1, status
    assert status["version"] == 6 and daemon.status()["source"] == "hub"
    print(
        f"rst: {failed} failed polls, longest scheduled gap {longest:.2f}s "
        f"(poll {POLL:g}s); version 6 applied {applied_at - healthy:.2f}s after "
        "the hub answered again"
    )


def _applied_at(daemon: Daemon, version: int) -> float | None:
    """When the daemon logged ``version`` as applied (its log's time stamp), or None."""
    for entry in daemon.log_entries():
        if entry["msg"] == "hub bundle applied" and entry.get("bundle") == version:
            stamp = datetime.datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
            return stamp.replace(tzinfo=datetime.UTC).timestamp()
    return None


def _black_hole(ns: str, on: bool) -> None:
    """Packets to the hub's port silently dropped in ``ns`` (no reset, no answer), by a
    table of the test's own beside the daemon's."""
    if on:
        rules = (
            "add table inet blackhole; "
            "add chain inet blackhole out { type filter hook output priority -10; }; "
            f"add rule inet blackhole out tcp dport {PORT} drop"
        )
    else:
        rules = "delete table inet blackhole"
    subprocess.run(["ip", "netns", "exec", ns, "nft", rules], check=True)


def _responsive_while_a_poll_hangs(daemon: Daemon, version: int, holed: float) -> float:
    """The hub is black-holed (since wall time ``holed``): status and metrics answer, the
    hub shows ``unreachable`` (returned: seconds from ``holed`` to the failed sync), and a
    reload completes while a poll hangs in connect."""
    assert daemon.metrics()  # the metrics port answers
    wait_until(lambda: hub_status(daemon)["result"] == "unreachable", timeout=60)
    status = hub_status(daemon)
    seen = float(status["last_sync"]) - holed
    assert status["version"] == version and daemon.status()["source"] == "hub"
    assert f"127.0.0.1:{PORT}" in (status["error"] or ""), status  # names the hub
    wait_until(lambda: hub_status(daemon)["next_poll"] is None, timeout=30)  # a poll hangs
    daemon.messages.clear()
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    assert hub_status(daemon)["version"] == version
    assert f"appliance_policy_version {float(version)}" in daemon.metrics().splitlines()
    return seen


@pytest.mark.parametrize("when", ["boot", "run time"])
def test_a_black_holed_hub_holds_nothing_and_is_followed_once_it_answers(
    netns: str, start_daemon: Start, tmp_path: Path, when: str
) -> None:
    """The hub's packets dropped (no reset, no answer). At boot: the last good bundle is
    enforced, and the daemon ready, before any poll could end. Both at boot and
    at run time: status, metrics and reloads answer while a poll hangs, the hub shows
    ``unreachable``, the version it offers is applied once it answers again, and SIGTERM
    ends the daemon with a poll hanging."""
    key = keys.generate()
    hub = Hub(netns, tmp_path / "bundles", key)
    try:
        hub.publish(build(5))
        hub.start()
        profile = local_profile(tmp_path, key, hub)
        daemon = start_daemon(netns, profile)
        wait_until(lambda: hub_status(daemon)["version"] == 5, timeout=30)
        if when == "boot":
            assert daemon.stop() == 0
            _black_hole(netns, True)
            holed = time.time()
            hub.publish(build(6, extra_rule=True))
            daemon = start_daemon(netns, profile)  # READY=1 came
            status = daemon.status()
            assert status["source"] == "hub" and status["hub"]["version"] == 5, status
            # ready with the stored bundle before any poll could end: in the log, the
            # first failed sync (after the connect timeout) comes after "ready"
            wait_until(lambda: hub_status(daemon)["result"] == "unreachable", timeout=60)
            messages = [(e["msg"], e.get("source")) for e in daemon.log_entries()]
            assert ("ready", "hub") in messages, messages
            failed = [i for i, (msg, _) in enumerate(messages) if msg.startswith("hub sync")]
            assert failed and failed[0] > messages.index(("ready", "hub")), messages
        else:
            _black_hole(netns, True)
            holed = time.time()
            hub.publish(build(6, extra_rule=True))
        seen = _responsive_while_a_poll_hangs(daemon, 5, holed)
        _black_hole(netns, False)
        wait_until(lambda: hub_status(daemon)["version"] == 6, timeout=RECOVERED_WITHIN)
        _black_hole(netns, True)
        wait_until(lambda: hub_status(daemon)["next_poll"] is None, timeout=30)
        assert daemon.stop(timeout=20) == 0  # SIGTERM with a poll hanging in connect
        print(
            f"black hole at {when}: policy kept; unreachable {seen:.1f}s after the hub "
            "went silent ([hub].timeout 5s); version 6 once it answered"
        )
    finally:
        hub.stop()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed, and its key."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "hub.crt", directory / "hub.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


TLS_SERVER = r"""
import http.server, ssl, sys
port, root, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening", flush=True)
server.serve_forever()
"""


def test_a_hub_with_an_untrusted_certificate_is_not_followed(
    netns: str, fault_hub: FaultHub, start_daemon: Start, tmp_path: Path
) -> None:
    """The hub's bundles behind TLS with a certificate no trusted CA signed: the stored
    bundle stays enforced and nothing new is applied; with the certificate as [hub].ca the
    same hub is followed."""
    hub = fault_hub.hub
    pub = tmp_path / "hub.pub"
    pub.write_text(hub.key.public.encode() + "\n")
    cert, key = _self_signed(tmp_path)
    profile = tmp_path / "profile.toml"

    def write(url: str, ca: str = "") -> None:
        profile.write_text(
            f'version = 1\nname = "edge-1"\n\n[hub]\nurl = "{url}"\ntrust = ["{pub}"]\n'
            f'poll = "{POLL:g}s"\ntimeout = "3s"\n' + (f'ca = "{ca}"\n' if ca else "")
        )

    hub.publish(build(5))
    write(f"http://127.0.0.1:{PORT}/{PATH}/")
    first = start_daemon(netns, profile)
    wait_until(lambda: hub_status(first)["version"] == 5, timeout=30)
    assert first.stop() == 0
    hub.publish(build(6, extra_rule=True))
    tls = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-c",
            TLS_SERVER,
            "8443",
            str(hub.root),
            str(cert),
            str(key),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert tls.stdout is not None and tls.stdout.readline().strip() == "listening"
        write(f"https://127.0.0.1:8443/{PATH}/")
        daemon = start_daemon(netns, profile)
        share = _cpu_share(daemon, CPU_WINDOW)
        wait_until(lambda: hub_status(daemon)["result"] == "unreachable", timeout=30)
        status = hub_status(daemon)
        assert status["version"] == 5
        assert "certificate" in (status["error"] or "").lower(), status
        assert share < 0.5
        daemon.stop()
        write(f"https://127.0.0.1:8443/{PATH}/", ca=str(cert))
        trusted = start_daemon(netns, profile)
        wait_until(lambda: hub_status(trusted)["version"] == 6, timeout=RECOVERED_WITHIN)
        print(f"bad TLS: {status['error']!r}, CPU {share:.1%}; with [hub].ca: version 6")
    finally:
        tls.kill()
        tls.wait()
