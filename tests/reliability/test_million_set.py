"""The daemon with a large blocklist inside the unit's memory limit.

``appliance run`` runs in a memory cgroup of its own, limited as the systemd unit limits it
(``MemoryMax=``, and ``MemoryHigh=`` where the cgroup has it), joined before the
interpreter starts, so everything it and its children use is counted (the kernel's set
elements it inserts included). Its profile's interval set takes its elements from an
``elements_file`` of distinct addresses and CIDRs; the daemon loads it, reloads it after a
change of a tenth of it (a twentieth deleted, a twentieth added: 50k and 50k at a million)
and repairs a drift made with ``nft`` (read from the kernel's nf_tables events, not by a
dump of the set). No OOM kill, no allocation refused at the limit,
and the peak stays below the limit; the peak is printed. Element counts come from the
daemon's status; the kernel is checked by looking elements up one by one over netlink, and
its whole count read once at 200,000 (a dump of an interval set costs the kernel a walk of
the set per message).

200,000 elements in the default run; 1,000,000 as well with APPLIANCE_SOAK=1.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.adapters.netlink import (
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    ack_error,
    iter_messages,
    nlattr,
)
from appliance.adapters.nfelements import (
    FAMILIES,
    NFT_MSG_GETSETELEM,
    NFTA_DATA_VALUE,
    NFTA_SET_ELEM_KEY,
    NLA_F_NESTED,
    message,
    names,
)
from appliance.adapters.nfsets import NfSets, open_socket
from tests.conftest import REPO
from tests.daemon.conftest import Daemon
from tests.reliability.conftest import SOAK

pytestmark = [pytest.mark.root, pytest.mark.slow]

SEED = 15
SAMPLES = 5  # elements looked up one by one in the kernel after each step
UNIT = REPO / "systemd" / "appliance.service"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SET = ("inet", "appliance", "blocklist")

PROFILE = """version = 1
name = "million-set"
[zones.lan]
interfaces = ["eth1"]
[sets.blocklist]
type = "ipv4_addr"
interval = true
elements_file = "blocklist.txt"
[[rules]]
name = "drop-blocklist"
from = "any"
to = "self"
saddr = ["@blocklist"]
action = "drop"
"""


def unit_bytes(key: str) -> int:
    """``key=`` of the unit's [Service] (``512M``: systemd's suffixes, base 1024)."""
    match = re.search(rf"^{key}=(\d+)([KMGT]?)\s*$", UNIT.read_text(), re.MULTILINE)
    assert match, f"{UNIT.name}: no {key}="
    scale: int = 1024 ** " KMGT".index(match.group(2) or " ")
    return int(match.group(1)) * scale


def element(slot: int) -> str:
    """The element of a slot of 8 addresses in 10.0.0.0/8: a /30 for one slot in four, a
    host otherwise; elements of distinct slots are never adjacent (nothing merges)."""
    base = (10 << 24) + slot * 8
    if slot % 4 == 0:
        return f"{base >> 24}.{base >> 16 & 255}.{base >> 8 & 255}.{base & 255}/30"
    base += 1
    return f"{base >> 24}.{base >> 16 & 255}.{base >> 8 & 255}.{base & 255}"


@dataclass
class Usage:
    limit: int
    peak: int
    over_limit: int  # v1 memory.failcnt, v2 memory.events max: the limit was hit
    oom: int
    oom_kill: int


class MemoryCgroup:
    """A new memory cgroup, v1 (``memory.limit_in_bytes``) or v2 (``memory.max``): below
    this process's own (v1), or below the nearest ancestor that hands the memory controller
    down (v2)."""

    def __init__(self, limit: int, high: int) -> None:
        name = f"appliance-test-{uuid.uuid4().hex[:8]}"
        own = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = [line.split(":", 2)[2] for line in own if "memory" in line.split(":")[1].split(",")]
        if v1 and (CGROUP_ROOT / "memory").is_dir():
            self.v2 = False
            self.path = CGROUP_ROOT / "memory" / v1[0].lstrip("/") / name
        else:
            self.v2 = True
            self.path = self._v2_parent(own) / name
        self.limit = limit
        self.path.mkdir()
        if self.v2:
            (self.path / "memory.max").write_text(str(limit))
            (self.path / "memory.high").write_text(str(high))
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
        self.procs = self.path / "cgroup.procs"

    @staticmethod
    def _v2_parent(own: list[str]) -> Path:
        unified = [line.split(":", 2)[2] for line in own if line.startswith("0::")]
        if not (CGROUP_ROOT / "cgroup.controllers").exists() or not unified:
            pytest.skip("no memory cgroup (neither v1 nor v2) on this machine")
        parent = CGROUP_ROOT / unified[0].lstrip("/")
        while True:
            control = parent / "cgroup.subtree_control"
            if control.exists() and "memory" in control.read_text().split():
                return parent
            if parent == CGROUP_ROOT:
                pytest.skip("the cgroup v2 hierarchy hands no memory controller down")
            parent = parent.parent

    def _read(self, name: str) -> str:
        return (self.path / name).read_text()

    def _fields(self, name: str) -> dict[str, int]:
        return {k: int(v) for k, v in (line.split() for line in self._read(name).splitlines())}

    def usage(self) -> Usage:
        if self.v2:
            events = self._fields("memory.events")
            peak = int(self._read("memory.peak")) if (self.path / "memory.peak").exists() else 0
            return Usage(self.limit, peak, events["max"], events["oom"], events["oom_kill"])
        control = self._fields("memory.oom_control")
        return Usage(
            self.limit,
            int(self._read("memory.max_usage_in_bytes")),
            int(self._read("memory.failcnt")),
            control.get("under_oom", 0),
            control.get("oom_kill", 0),
        )

    def high_water_marks(self) -> dict[str, int]:
        """``NAME[PID]``: VmHWM in bytes, of each process in the cgroup."""
        marks = {}
        for pid in self.pids():
            with contextlib.suppress(OSError, StopIteration):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                with open(f"/proc/{pid}/status") as status:
                    line = next(line for line in status if line.startswith("VmHWM:"))
                marks[f"{name}[{pid}]"] = int(line.split()[1]) * 1024
        return marks

    def pids(self) -> list[int]:
        return [int(pid) for pid in self._read("cgroup.procs").split()]

    def remove(self) -> None:
        """Once the processes in it (ours: the daemon and its children) are gone."""
        deadline = time.monotonic() + 30
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def memory_cgroup() -> Iterator[MemoryCgroup]:
    group = MemoryCgroup(unit_bytes("MemoryMax"), unit_bytes("MemoryHigh"))
    try:
        yield group
    finally:
        group.remove()


class LimitedDaemon(Daemon):
    """``appliance run`` that joins a cgroup before it starts: a shell writes its own pid
    to ``cgroup.procs`` and execs the daemon."""

    def __init__(self, ns: str, tmp: Path, profile: Path, procs: Path) -> None:
        super().__init__(ns, tmp, profile)
        self.procs = procs

    def start(self, env: dict[str, str] | None = None) -> Daemon:
        command = [
            "sh",
            "-c",
            'echo $$ > "$0" && exec "$@"',
            str(self.procs),
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--netns",
            self.ns,
            "--profile",
            str(self.profile),
            "--state-dir",
            str(self.state_dir),
            "--control-socket",
            self.socket,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=dict(os.environ, NOTIFY_SOCKET=self.notify_path),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self


def kernel_count(ns: str) -> int:
    """The elements the kernel's set holds: one netlink dump, counted as it arrives (the
    kernel walks an interval set again for every message of a dump: about 10 s for 200,000
    elements on a loaded 2-core machine, so it is done once, at the end)."""
    with NfSets(netns=ns) as sets:
        return sets.count("blocklist")


def kernel_holds(ns: str, items: list[str]) -> list[bool]:
    """Whether the kernel's set holds each element: an NFT_MSG_GETSETELEM of its first
    address, one element looked up, no dump (``nft get element`` lists the whole interval
    set first: 9 s an element at 200,000)."""
    found = []
    with contextlib.closing(open_socket(ns)) as sock:
        sock.settimeout(30)
        for seq, item in enumerate(items, 1):
            key = ipaddress.ip_network(item).network_address.packed
            element = nlattr(
                NLA_F_NESTED,
                nlattr(NFTA_SET_ELEM_KEY | NLA_F_NESTED, nlattr(NFTA_DATA_VALUE, key)),
            )
            table, name = names(*SET[1:])
            family = FAMILIES[SET[0]]
            flags = NLM_F_REQUEST | NLM_F_ACK
            sock.sendall(message(NFT_MSG_GETSETELEM, flags, seq, family, table + name, element))
            code = None
            while code is None:
                for kind, answer, body in iter_messages(sock.recv(65536)):
                    if answer == seq and kind == NLMSG_ERROR:
                        code = ack_error(body)
            assert code in (0, errno.ENOENT), f"{item}: {os.strerror(code)}"
            found.append(code == 0)
    return found


def holds(ns: str, item: str) -> bool:
    return kernel_holds(ns, [item])[0]


def wait_for(what: str, predicate: Callable[[], bool], daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert daemon.proc is not None
        if daemon.proc.poll() is not None:
            pytest.fail(f"daemon exited {daemon.proc.returncode} before {what}:\n{daemon.log()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout:.0f} s:\n{daemon.log()}")
        time.sleep(0.1)


def write_listing(path: Path, elements: list[str]) -> None:
    """Replaced whole (a new file renamed over it): a reload never reads half of it."""
    part = path.with_suffix(".part")
    part.write_text("".join(f"{e}\n" for e in elements))
    part.replace(path)


@pytest.mark.parametrize(
    "size",
    [
        200_000,
        pytest.param(
            1_000_000,
            marks=pytest.mark.skipif(not SOAK, reason="1,000,000 elements: APPLIANCE_SOAK=1"),
        ),
    ],
)
def test_large_set_loads_reloads_and_repairs_within_the_unit_memory(
    netns: str, tmp_path: Path, size: int
) -> None:
    change = size // 20  # deleted, and as many added, by the reload
    deadline = size / 1000  # seconds, of each step: the load, the reload, the repair
    rng = random.Random(SEED)
    every = [element(slot) for slot in rng.sample(range(1 << 21), size + change)]
    first, added = every[:size], every[size:]
    removed, second = first[:change], first[change:] + added
    del every
    listing = tmp_path / "blocklist.txt"
    write_listing(listing, first)
    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE)
    peaks: dict[str, int] = {}
    steps: dict[str, float] = {}
    with memory_cgroup() as group:
        daemon = LimitedDaemon(netns, tmp_path, profile, group.procs)
        try:
            begun = time.monotonic()
            daemon.start()
            daemon.wait_for("READY=1", timeout=deadline)
            steps["load"] = time.monotonic() - begun
            status = daemon.status()
            assert (status["source"], status["last_error"]) == ("profile", None)
            assert status["sets"]["blocklist"] == size
            assert all(kernel_holds(netns, rng.sample(first, SAMPLES)))
            peaks["load"] = group.usage().peak

            write_listing(listing, second)
            begun = time.monotonic()
            daemon.send_signal(signal.SIGHUP)
            daemon.wait_for("RELOADING=1", timeout=deadline)
            daemon.wait_for("READY=1", timeout=deadline)
            steps["reload"] = time.monotonic() - begun
            status = daemon.status()
            assert (status["source"], status["last_error"]) == ("profile", None)
            assert status["sets"]["blocklist"] == size
            assert all(kernel_holds(netns, rng.sample(added, SAMPLES)))
            assert not any(kernel_holds(netns, rng.sample(removed, SAMPLES)))
            peaks["reload"] = group.usage().peak

            # Another writer: profile elements deleted, stale ones back tagged as the daemon
            # tags the profile's, and an untagged one (run-time state: kept, not drift).
            gone, stale, runtime = rng.sample(second, SAMPLES), removed[:2], "192.0.2.1"
            tagged = ", ".join(f'{e} comment "profile"' for e in stale)
            drift = (
                f"delete element {' '.join(SET)} {{ {', '.join(gone)} }}\n"
                f"add element {' '.join(SET)} {{ {tagged} }}\n"
                f"add element {' '.join(SET)} {{ {runtime} }}\n"
            )
            begun = time.monotonic()
            subprocess.run(
                ["ip", "netns", "exec", netns, "nft", "-f", "-"],
                input=drift,
                text=True,
                check=True,
                timeout=deadline,
            )
            # nft fetches every element of an interval set before it deletes one: the
            # drift is in the kernel only as it ends, and the repair is timed from there
            steps["nft"] = time.monotonic() - begun
            begun = time.monotonic()
            # (the drift may be repaired before it could be looked at: the repair counts)
            wait_for(
                "the drift repaired",
                lambda: kernel_holds(netns, [*gone, *stale]) == [True] * len(gone) + [False] * 2,
                daemon,
                deadline,
            )
            steps["repair"] = time.monotonic() - begun
            wait_for(  # counted once the repair's transaction is read back
                "the repair counted",
                lambda: daemon.status()["drift_repairs"].get("elements", 0) >= 1,
                daemon,
                deadline,
            )
            steps["counted"] = time.monotonic() - begun
            assert kernel_holds(netns, [runtime]) == [True]
            reads = [e["msg"] for e in daemon.log_entries() if "read back" in e["msg"]]
            if size <= 200_000:  # read from the events, no dump
                assert "table read back from nf_tables events" in reads, reads
            steps[reads[-1].removeprefix("table read back ") if reads else "read"] = 0.0
            status = daemon.status()
            assert status["sets"]["blocklist"] == size + 1
            peaks["repair"] = group.usage().peak
            if size <= 200_000:  # a dump of the whole set (see kernel_count)
                assert kernel_count(netns) == size + 1
        finally:
            hwm = group.high_water_marks()
            daemon.close()
            usage = group.usage()
            listing.unlink()
            shutil.rmtree(daemon.state_dir, ignore_errors=True)  # the last good policy's copies
            print(
                f"\n{size:,} elements: cgroup peak {usage.peak / 2**20:.0f} MiB"
                f" of {usage.limit / 2**20:.0f} MiB ("
                + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in peaks.items())
                + "); "
                + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
                + f"; limit hit {usage.over_limit}, oom {usage.oom}, oom kills {usage.oom_kill};"
                + " processes' RSS high-water marks: "
                + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in hwm.items())
            )
    assert (usage.oom_kill, usage.oom, usage.over_limit) == (0, 0, 0)
    assert usage.peak < usage.limit
