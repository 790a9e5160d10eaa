"""The daemon and a hub: bundles applied, refused bundles change nothing, outages keep the
last good bundle enforced. Each test runs the daemon and the reference hub (``appliance hub
serve``) inside its own namespace, on that namespace's loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from appliance.daemon.control import request
from appliance.storage import atomic_write
from appliance.sync import bundle as B
from appliance.sync import keys
from tests.conftest import REPO, nft_in, run_appliance
from tests.daemon.conftest import (
    Daemon,
    nft_in_curl,
    rule_handles,
    wait_until,
    write_profile,
)

pytestmark = pytest.mark.root

PORT = 8089  # the hub, on the test namespace's loopback
PATH = "site/edge-1"

BUNDLE_PROFILE: dict[str, object] = {
    "version": 1,
    "name": "hub-edge",
    "zones": {"lan": {"interfaces": ["eth1"]}},
    "sets": {
        "blocklist": {"type": "ipv4_addr", "interval": True, "elements": ["203.0.113.0/24"]},
    },
    "rules": [
        {"name": "drop-bl", "from": "any", "to": "any", "saddr": ["@blocklist"], "action": "drop"},
        {
            "name": "ssh",
            "from": "lan",
            "to": "self",
            "proto": "tcp",
            "dport": [22],
            "action": "accept",
        },
    ],
}
EXTRA_RULE = {
    "name": "web",
    "from": "lan",
    "to": "self",
    "proto": "tcp",
    "dport": [80],
    "action": "accept",
}
FEED = ["192.0.2.0/25", "198.51.100.7"]

# A server answering every request with one HTTP error status (500, 504).
ERROR_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(int(sys.argv[2]))
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_POST = do_HEAD = do_GET
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

# A hub that serves one bundle pair once, then answers 503: it goes away right after the
# daemon fetched the pair, before the commit-confirm check.
VANISHING_SERVER = """
import http.server, sys
files = {"bundle.json": open(sys.argv[2], "rb").read(),
         "bundle.json.sig": open(sys.argv[3], "rb").read()}
served = set()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.split("?")[0].rsplit("/", 1)[-1]
        if name in files and name not in served:
            served.add(name)
            body = files[name]
            self.send_response(200)
            self.send_header("ETag", '"%s-1"' % name)
        else:
            body = b""
            self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

# A hub that answers at once and then sends its body one byte a second (for two minutes at
# most): only the client's deadline for the whole exchange can end it.
DRIP_SERVER = """
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "120")
        self.end_headers()
        try:
            for _ in range(120):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass
    do_POST = do_HEAD = do_GET
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def build(
    version: int,
    feed: Sequence[str] = FEED,
    expires: float | None = None,
    extra_rule: bool = False,
) -> bytes:
    doc = json.loads(json.dumps(BUNDLE_PROFILE))
    if extra_rule:
        doc["rules"].append(EXTRA_RULE)
    when = expires if expires is not None else time.time() + 3600
    return B.build_bundle(doc, {"blocklist": list(feed)}, version, when, Path("/"))


def sign(data: bytes, *signers: keys.PrivateKey) -> bytes:
    text = ""
    for key in signers:
        text = B.sign_text(text, key, data)
    return text.encode()


class Hub:
    """The bundle directory and the process serving it (``appliance hub serve``, or a
    server answering 500) inside the test's namespace."""

    def __init__(self, ns: str, root: Path, key: keys.PrivateKey) -> None:
        self.ns = ns
        self.root = root
        self.key = key
        self.directory = root / PATH
        self.directory.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{PORT}/{PATH}/"

    def publish(self, data: bytes, signature: bytes | None = None, subdir: str = "") -> None:
        target = self.directory / subdir if subdir else self.directory
        target.mkdir(parents=True, exist_ok=True)
        atomic_write(target / B.BUNDLE_FILE, data, 0o644)
        atomic_write(target / B.SIG_FILE, signature or sign(data, self.key), 0o644)

    def start(self, broken: int = 0, vanishing: bool = False, drip: bool = False) -> Hub:
        self.stop()
        if broken:
            command = [sys.executable, "-c", ERROR_SERVER, str(PORT), str(broken)]
        elif drip:
            command = [sys.executable, "-c", DRIP_SERVER, str(PORT)]
        elif vanishing:
            pair = [str(self.directory / B.BUNDLE_FILE), str(self.directory / B.SIG_FILE)]
            command = [sys.executable, "-c", VANISHING_SERVER, str(PORT), *pair]
        else:
            listen = f"127.0.0.1:{PORT}"
            command = [
                sys.executable,
                "-m",
                "appliance",
                "hub",
                "serve",
                str(self.root),
                "--listen",
                listen,
            ]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *command],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not vanishing and not drip:  # these never answer /fleet in time
            wait_until(self._answers, timeout=20)
        return self

    def _answers(self) -> bool:
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                f"http://127.0.0.1:{PORT}/fleet",
            ],
            check=False,
        )
        return result.returncode == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def fleet(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(nft_in_curl(self.ns, f"http://127.0.0.1:{PORT}/fleet"))
        return answer


@pytest.fixture(scope="module")
def key() -> keys.PrivateKey:
    return keys.generate()


@pytest.fixture
def hub(netns: str, tmp_path: Path, key: keys.PrivateKey) -> Iterator[Hub]:
    server = Hub(netns, tmp_path / "bundles", key)
    try:
        yield server
    finally:
        server.stop()


def local_profile(tmp_path: Path, key: keys.PrivateKey, hub: Hub, poll: str = "1s") -> Path:
    """A hub-only local profile: version, name, [hub] and [metrics]."""
    pub = tmp_path / "hub.pub"
    pub.write_text(key.public.encode() + "\n")
    path = tmp_path / "profile.toml"
    path.write_text(
        f'version = 1\nname = "edge-1"\n\n[hub]\nurl = "{hub.url}"\n'
        f'trust = ["{pub}"]\npoll = "{poll}"\ntimeout = "5s"\n\n'
        '[metrics]\nlisten = "127.0.0.1:9469"\n'
    )
    return path


def elements(ns: str, name: str = "blocklist") -> dict[str, str | None]:
    """Element text -> its comment, as the kernel holds the set."""
    listing = json.loads(nft_in(ns, "-j", "list", "set", "inet", "appliance", name))
    found: dict[str, str | None] = {}
    for obj in listing["nftables"]:
        for elem in obj.get("set", {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                value, comment = elem["elem"]["val"], elem["elem"].get("comment")
            else:
                value, comment = elem, None
            if isinstance(value, dict) and "prefix" in value:
                value = f"{value['prefix']['addr']}/{value['prefix']['len']}"
            found[str(value)] = comment
    return found


def hub_status(daemon: Daemon) -> dict[str, Any]:
    status = daemon.status()
    assert status["hub"] is not None, status
    hub: dict[str, Any] = status["hub"]
    return hub


def sync_count(daemon: Daemon, result: str) -> float:
    for line in daemon.metrics().splitlines():
        if line.startswith(f'appliance_hub_sync_total{{result="{result}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no appliance_hub_sync_total for {result}")


def metric(daemon: Daemon, name: str) -> float:
    for line in daemon.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name}")


def wait_version(daemon: Daemon, version: int, timeout: float = 20) -> None:
    wait_until(lambda: hub_status(daemon)["version"] == version, timeout=timeout)


@pytest.fixture
def running(
    hub: Hub, tmp_path: Path, key: keys.PrivateKey, start_daemon: Callable[..., Daemon]
) -> Daemon:
    """A daemon enforcing version 5 from the hub, its sync recorded as applied (the version
    shows as soon as the bundle is enforced, the sync once the hub has been reached after
    it)."""
    hub.publish(build(5))
    hub.start()
    daemon: Daemon = start_daemon(hub.ns, local_profile(tmp_path, key, hub))
    wait_version(daemon, 5)
    wait_until(lambda: "applied" in hub_status(daemon)["syncs"], timeout=20)
    return daemon


def test_valid_bundle_is_applied(hub: Hub, running: Daemon) -> None:
    status = running.status()
    assert status["source"] == "hub" and status["policy"] == "hub-edge"
    assert status["hub"]["result"] == "applied" and not status["hub"]["stale"]
    have = elements(hub.ns)
    # The profile's own element is tagged "profile"; the hub's feed "hub".
    assert have == {"203.0.113.0/24": "profile", "192.0.2.0/25": "hub", "198.51.100.7": "hub"}
    assert sync_count(running, "applied") == 1
    assert metric(running, "appliance_policy_version") == 5
    assert metric(running, "appliance_hub_last_success_timestamp_seconds") > time.time() - 60
    assert metric(running, "appliance_hub_bundle_stale") == 0
    # Reported back to the hub.
    wait_until(lambda: (hub.fleet().get(PATH) or {}).get("version") == 5)
    # Hub elements are the bundle's desired state, not drift.
    request(running.socket, {"op": "resync"})
    time.sleep(1.0)
    assert running.status()["drift_repairs"] == {}


def _refusal(hub: Hub, key: keys.PrivateKey, other: keys.PrivateKey, case: str) -> str:
    """Publish one bad thing; the result it must give."""
    if case == "tampered":
        data = build(6, ["192.0.2.0/25", "198.51.100.8"])
        signature = sign(data, key)
        flipped = data.replace(b"198.51.100.8", b"198.51.100.9")
        assert (
            len(flipped) == len(data)
            and sum(a != b for a, b in zip(flipped, data, strict=True)) == 1
        )
        hub.publish(flipped, signature)
        return "bad_signature"
    if case == "wrong_key":
        data = build(6, ["192.0.2.0/25", "198.51.100.8"])
        hub.publish(data, sign(data, other))
        return "bad_signature"
    if case == "older":
        hub.publish(build(4, ["192.0.2.0/25", "198.51.100.8"]))
        return "rollback"
    if case == "same":
        # The very same bytes with one more signature line (a key rotation): a no-op.
        data = (hub.directory / B.BUNDLE_FILE).read_bytes()
        hub.publish(data, sign(data, key, other))
        return "not_modified"
    if case == "expired":
        hub.publish(build(6, ["192.0.2.0/25", "198.51.100.8"], expires=time.time() - 60))
        return "expired"
    if case == "too_large":
        big = hub.directory / B.BUNDLE_FILE
        with open(big, "wb") as handle:  # sparse: 65 MiB, over the 64 MiB cap
            handle.truncate(65 * 1024 * 1024)
        atomic_write(hub.directory / B.SIG_FILE, b"0011223344556677 AAAA\n", 0o644)
        return "too_large"
    if case in ("http_500", "http_504"):
        hub.start(broken=int(case[-3:]))
        return "http_error"
    if case == "hub_down":
        hub.stop()
        return "unreachable"
    if case == "drip":
        hub.start(drip=True)
        return "unreachable"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "tampered",
        "wrong_key",
        "older",
        "same",
        "expired",
        "too_large",
        "http_500",
        "http_504",
        "hub_down",
        "drip",
    ],
)
def test_refused_bundle_changes_nothing(
    hub: Hub, running: Daemon, key: keys.PrivateKey, case: str
) -> None:
    before_elements = elements(hub.ns)
    before_handles = rule_handles(hub.ns)
    before_hash = running.status()["table_hash"]
    result = _refusal(hub, key, keys.generate(), case)
    # A dripping hub must end in the client's deadline, not in a refused connection.
    error = "timed out after 5s" if case == "drip" else ""

    def reached() -> bool:
        now = hub_status(running)
        return bool(now["result"] == result and error in (now["error"] or ""))

    wait_until(reached, timeout=45)
    status = running.status()
    assert status["hub"]["version"] == 5 and status["source"] == "hub"
    assert status["table_hash"] == before_hash
    if result != "not_modified":
        assert status["hub"]["error"], status["hub"]
    assert sync_count(running, result) >= 1
    assert elements(hub.ns) == before_elements
    assert rule_handles(hub.ns) == before_handles
    assert metric(running, "appliance_policy_version") == 5


def test_hub_down_at_boot_enforces_the_last_good_bundle(
    hub: Hub,
    running: Daemon,
    tmp_path: Path,
    key: keys.PrivateKey,
    start_daemon: Callable[..., Daemon],
) -> None:
    assert running.stop() == 0
    hub.stop()
    nft_in(hub.ns, "delete", "table", "inet", "appliance")  # nothing left from before
    daemon = start_daemon(hub.ns, local_profile(tmp_path, key, hub))
    status = daemon.status()
    assert status["source"] == "hub" and status["hub"]["version"] == 5
    assert elements(hub.ns)["198.51.100.7"] == "hub"
    wait_until(lambda: hub_status(daemon)["result"] == "unreachable", timeout=20)
    assert daemon.status()["source"] == "hub"
    assert elements(hub.ns)["198.51.100.7"] == "hub"


def test_expired_last_good_bundle_is_enforced_and_stale(
    hub: Hub, tmp_path: Path, key: keys.PrivateKey, start_daemon: Callable[..., Daemon]
) -> None:
    expires = time.time() + 5
    hub.publish(build(5, expires=expires))
    hub.start()
    profile = local_profile(tmp_path, key, hub)
    daemon = start_daemon(hub.ns, profile)
    wait_version(daemon, 5, timeout=4)
    assert daemon.stop() == 0
    hub.stop()
    time.sleep(max(0.0, expires + 1.5 - time.time()))
    again = start_daemon(hub.ns, profile)
    status = again.status()
    assert status["source"] == "hub" and status["hub"]["version"] == 5
    assert status["hub"]["stale"] is True
    assert metric(again, "appliance_hub_bundle_stale") == 1
    assert elements(hub.ns)["198.51.100.7"] == "hub"


def test_delta_on_the_running_base_is_applied_as_element_deltas(hub: Hub, running: Daemon) -> None:
    handles = rule_handles(hub.ns)
    full = build(6, ["192.0.2.0/25", "198.51.100.9"])
    old = B.parse_bundle((hub.directory / B.BUNDLE_FILE).read_bytes(), Path("/"))
    hub.publish(full, subdir=B.FULL_DIR)
    hub.publish(B.build_delta(full, old, Path("/")))
    wait_version(running, 6)
    assert elements(hub.ns) == {
        "203.0.113.0/24": "profile",
        "192.0.2.0/25": "hub",
        "198.51.100.9": "hub",
    }
    assert rule_handles(hub.ns) == handles  # no table swap
    assert running.status()["hub"]["result"] == "applied"


def test_delta_on_a_wrong_base_is_refused_and_the_full_bundle_fetched(
    hub: Hub, running: Daemon
) -> None:
    base = B.parse_bundle(build(4, ["192.0.2.0/25"]), Path("/"))  # not the running 5
    full = build(7, ["198.51.100.10"])
    hub.publish(full, subdir=B.FULL_DIR)
    hub.publish(B.build_delta(full, base, Path("/")))
    wait_version(running, 7)
    assert elements(hub.ns) == {"203.0.113.0/24": "profile", "198.51.100.10": "hub"}


def test_runtime_element_with_a_timeout_survives_a_bundle(hub: Hub, running: Daemon) -> None:
    answer = request(
        running.socket,
        {"op": "set_add", "set": "autoblock_v4", "elements": ["10.9.9.9"], "timeout": "1h"},
    )
    assert answer["ok"], answer
    # A structural change (one more rule): a table swap, carrying run-time elements.
    hub.publish(build(6, ["192.0.2.0/25"], extra_rule=True))
    wait_version(running, 6)
    assert "web" in rule_handles(hub.ns)
    assert "10.9.9.9" in elements(hub.ns, "autoblock_v4")
    assert elements(hub.ns) == {"203.0.113.0/24": "profile", "192.0.2.0/25": "hub"}


def test_hub_gone_after_the_apply_rolls_back(hub: Hub, running: Daemon) -> None:
    """Commit-confirm: the hub served version 6, then could not be reached: 5 comes back."""
    before = elements(hub.ns)
    handles = rule_handles(hub.ns)
    hub.stop()
    hub.publish(build(6, ["192.0.2.0/25", "198.51.100.99"]))
    hub.start(vanishing=True)
    wait_until(lambda: "rolled back" in (hub_status(running)["error"] or ""), timeout=30)
    status = running.status()
    assert status["hub"]["version"] == 5 and status["source"] == "hub"
    assert status["hub"]["syncs"].get("unreachable", 0) >= 1
    assert elements(hub.ns) == before
    assert rule_handles(hub.ns) == handles
    assert metric(running, "appliance_policy_version") == 5


def test_hub_only_profile_runs_the_failsafe_until_the_first_bundle(
    hub: Hub, tmp_path: Path, key: keys.PrivateKey, start_daemon: Callable[..., Daemon]
) -> None:
    daemon = start_daemon(hub.ns, local_profile(tmp_path, key, hub))
    status = daemon.status()
    assert status["source"] == "failsafe" and status["hub"]["version"] is None
    wait_until(lambda: hub_status(daemon)["result"] == "unreachable", timeout=20)
    assert sync_count(daemon, "unreachable") >= 1  # the failsafe serves the local [metrics]
    hub.publish(build(5))
    hub.start()
    wait_version(daemon, 5, timeout=30)  # after a backoff of at most a few seconds
    assert daemon.status()["source"] == "hub"
    assert elements(hub.ns)["198.51.100.7"] == "hub"


def test_local_policy_runs_until_the_first_bundle_and_sighup_keeps_the_bundle(
    hub: Hub, tmp_path: Path, key: keys.PrivateKey, start_daemon: Callable[..., Daemon]
) -> None:
    profile = local_profile(tmp_path, key, hub)
    hub_section = profile.read_text().split("[hub]", 1)[1].split("[metrics]", 1)[0]
    write_profile(profile)  # a policy of its own (daemon-test), with [metrics]
    profile.write_text(profile.read_text() + "\n[hub]" + hub_section)
    daemon = start_daemon(hub.ns, profile)
    status = daemon.status()
    assert (status["policy"], status["source"]) == ("daemon-test", "profile")
    hub.publish(build(5))
    hub.start()
    wait_version(daemon, 5, timeout=30)
    assert daemon.status()["policy"] == "hub-edge"
    generation = daemon.status()["generation"]
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: "the hub's bundle stays" in daemon.log(), timeout=15)
    status = daemon.status()
    assert (status["policy"], status["source"]) == ("hub-edge", "hub")
    assert status["generation"] == generation
    assert elements(hub.ns)["198.51.100.7"] == "hub"


BUNDLE_PROFILE_TOML = """version = 1
name = "hub-edge"

[zones.lan]
interfaces = ["eth1"]

[sets.blocklist]
type = "ipv4_addr"
interval = true
elements = ["203.0.113.0/24"]

[[rules]]
name = "drop-bl"
from = "any"
to = "any"
saddr = ["@blocklist"]
action = "drop"

[[rules]]
name = "ssh"
from = "lan"
to = "self"
proto = "tcp"
dport = [22]
action = "accept"
"""


def test_plan_and_apply_of_a_profile_keep_hub_elements(
    hub: Hub, running: Daemon, tmp_path: Path
) -> None:
    """For a profile-driven plan or apply, the hub's elements are run-time state."""
    path = tmp_path / "same-as-bundle.toml"
    path.write_text(BUNDLE_PROFILE_TOML)
    plan = run_appliance("plan", "--netns", hub.ns, str(path))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert running.stop() == 0
    applied = run_appliance("apply", "--netns", hub.ns, str(path))
    assert applied.returncode == 0, applied.stderr
    assert elements(hub.ns)["198.51.100.7"] == "hub"


def test_a_stored_bundle_whose_key_is_no_longer_trusted_is_not_enforced(
    hub: Hub, running: Daemon, tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    assert running.stop() == 0
    hub.stop()
    other = keys.generate()
    profile = local_profile(tmp_path, other, hub)  # the trust list now names another key
    daemon = start_daemon(hub.ns, profile)
    status = daemon.status()
    assert status["source"] == "failsafe"  # a hub-only profile: nothing else to enforce
    assert "last good bundle not enforced" in (status["last_error"] or "")
    assert status["hub"]["version"] is None


def test_tuf_roles_at_daemon_level_with_a_revoked_key(
    hub: Hub, tmp_path: Path, start_daemon: Callable[..., Daemon]
) -> None:
    """[hub].root: the daemon follows TUF (2 of 3 targets keys), follows a new root that
    revokes a stolen targets key, and from then on refuses what that key helps sign; an
    expired timestamp makes it stale (still enforcing); a stored bundle edited on disk is
    refused at boot."""
    from appliance.sync import repository, tuf

    now = time.time()
    root_keys = [keys.generate() for _ in range(3)]
    targets_keys = [keys.generate() for _ in range(3)]
    online = keys.generate()
    directory = hub.directory
    roles = {
        tuf.ROOT: ([k.public for k in root_keys], 2),
        tuf.TARGETS: ([k.public for k in targets_keys], 2),
        tuf.SNAPSHOT: ([online.public], 1),
        tuf.TIMESTAMP: ([online.public], 1),
    }
    repository.init(directory, roles, now + 86400)
    for key in root_keys[:2]:
        repository.sign(directory, tuf.ROOT, key)

    def release(version: int, signers: Sequence[keys.PrivateKey]) -> None:
        atomic_write(directory / B.BUNDLE_FILE, build(version), 0o644)
        repository.stage_targets(directory, now + 86400)
        for key in signers:
            repository.sign(directory, tuf.TARGETS, key)
        repository.publish(directory, online, online, now + 86400, now + 3600)

    release(5, targets_keys[:2])
    hub.start()
    profile = tmp_path / "profile.toml"
    profile.write_text(
        f'version = 1\nname = "edge-1"\n\n[hub]\nurl = "{hub.url}"\n'
        f'root = "{directory / "1.root.json"}"\npoll = "1s"\ntimeout = "5s"\n\n'
        '[metrics]\nlisten = "127.0.0.1:9469"\n'
    )
    daemon = start_daemon(hub.ns, profile)
    wait_version(daemon, 5)
    before_hash = daemon.status()["table_hash"]
    # Root 2 revokes targets key 0; the stolen key and one good key sign version 6.
    stolen = targets_keys[0]
    repository.change_keys(directory, tuf.TARGETS, now + 86400, revoke=[stolen.public])
    for key in root_keys[1:]:
        repository.sign(directory, tuf.ROOT, key)
    atomic_write(directory / B.BUNDLE_FILE, build(6), 0o644)
    repository.stage_targets(directory, now + 86400)
    repository.sign(directory, tuf.TARGETS, targets_keys[1])  # 1 good signature of 2
    # The publisher would stop here; the thief adds the revoked key's signature by hand.
    staged = directory / repository.STAGED / "targets.json"
    atomic_write(staged, tuf.add_signature(staged.read_bytes(), tuf.TARGETS, stolen), 0o644)
    forged = tuf.parse(staged.read_bytes(), tuf.TARGETS)
    atomic_write(directory / f"{forged.version}.targets.json", forged.data, 0o644)
    data = (directory / B.BUNDLE_FILE).read_bytes()
    atomic_write(directory / f"{tuf.file_meta(data)['hashes']['sha256']}.bundle.json", data, 0o644)
    staged.unlink()
    repository.publish(directory, online, online, now + 86400, now + 3600)

    def refused() -> bool:
        now_status = hub_status(daemon)
        return bool(
            now_status["result"] == "bad_signature" and "1 of the 2" in (now_status["error"] or "")
        )

    wait_until(refused, timeout=45)
    status = daemon.status()
    assert status["hub"]["version"] == 5 and status["table_hash"] == before_hash
    # The good keys sign version 7: applied.
    release(7, targets_keys[1:])
    wait_version(daemon, 7)
    # A mirror serves an expired timestamp (a frozen hub): stale, version 7 still enforced.
    repository.timestamp(directory, online, time.time() - 60)
    wait_until(lambda: hub_status(daemon)["stale"], timeout=45)
    status = daemon.status()
    assert status["hub"]["result"] == "expired" and "timestamp.json" in status["hub"]["error"]
    assert status["hub"]["version"] == 7 and status["source"] == "hub"
    assert metric(daemon, "appliance_hub_bundle_stale") == 1
    repository.timestamp(directory, online, time.time() + 3600)  # renewed: fresh again
    wait_until(lambda: not hub_status(daemon)["stale"], timeout=45)
    assert metric(daemon, "appliance_hub_bundle_stale") == 0
    # The stored bundle edited on disk: refused at boot, the failsafe of this hub-only profile.
    assert daemon.stop() == 0
    hub.stop()
    stored = (daemon.state_dir / "hub" / "current" / B.BUNDLE_FILE).resolve()
    edited = stored.read_bytes().replace(b'{"version":7,', b'{"version":8,', 1)
    assert edited != stored.read_bytes()
    stored.write_bytes(edited)
    booted = start_daemon(hub.ns, profile)
    status = booted.status()
    assert status["source"] == "failsafe" and status["hub"]["version"] is None, status
    assert "stored bundle refused: bad_signature" in (status["last_error"] or ""), status
    assert "changed since it was verified" in status["last_error"]
