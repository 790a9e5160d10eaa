"""Set elements over nf_tables netlink against the kernel, in a private namespace: what nft
lists after an apply is what it lists after ``nft -f`` of the same elements; deltas,
flush and refill, absent deletes, refusals, and packets dropped by an interval set."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from appliance.adapters import nfsets
from appliance.model.intervals import Spans

TOP32 = (1 << 32) - 1


def _v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _v6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


SET_TYPES = {32: "ipv4_addr", 128: "ipv6_addr", 16: "inet_service"}


def nft(ns: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], input=stdin, capture_output=True, text=True
    )
    assert done.returncode == 0, f"nft {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def make_set(ns: str, table: str, name: str, width: int, interval: bool, size: int = 0) -> None:
    flags = "flags interval; " if interval else ""
    bound = f"size {size}; " if size else ""
    nft(
        ns,
        "-f",
        "-",
        stdin=(
            f"table inet {table} {{ set {name} {{ type {SET_TYPES[width]}; {flags}{bound}}}; }}\n"
        ),
    )


def element_texts(width: int, interval: bool, spans: Spans) -> list[str]:
    from appliance.model.intervals import span_text

    kind = SET_TYPES[width]
    if interval:
        return [span_text(kind, first, last) for first, last in spans]
    return [span_text(kind, v, v) for first, last in spans for v in range(first, last + 1)]


def nft_add(
    ns: str, table: str, name: str, width: int, interval: bool, spans: Spans, tag: str | None = None
) -> None:
    comment = f' comment "{tag}"' if tag else ""
    texts = ", ".join(f"{text}{comment}" for text in element_texts(width, interval, spans))
    nft(ns, "-f", "-", stdin=f"add element inet {table} {name} {{ {texts} }}\n")


def listed(ns: str, table: str, name: str) -> str:
    return nft(ns, "list", "set", "inet", table, name).replace(f"table inet {table} ", "table T ")


@pytest.fixture
def kernel(netns: str) -> Iterator[tuple[str, nfsets.NfSets]]:
    with nfsets.NfSets(netns=netns) as sets:
        yield netns, sets


V6_TOP = (1 << 128) - 1
SHAPES = {
    "ipv4 hash": (32, False, [(0, 0), (_v4("10.0.0.1"), _v4("10.0.0.3")), (TOP32, TOP32)]),
    "ipv4 interval": (
        32,
        True,
        [
            (0, 5),
            (_v4("10.0.0.0"), _v4("10.0.0.255")),
            (_v4("10.0.2.7"), _v4("10.0.3.1")),
            (_v4("255.255.255.0"), TOP32),
        ],
    ),
    "ipv4 interval from 1": (32, True, [(1, 1), (_v4("192.0.2.0"), _v4("192.0.2.127"))]),
    "ipv6 hash": (128, False, [(1, 1), (_v6("2001:db8::1"), _v6("2001:db8::2")), (V6_TOP,) * 2]),
    "ipv6 interval": (
        128,
        True,
        [(0, 5), (_v6("2001:db8::"), _v6("2001:db8::ffff")), (_v6("ffff::"), V6_TOP)],
    ),
    "ports hash": (16, False, [(0, 0), (22, 22), (80, 81), (65535, 65535)]),
    "ports interval": (16, True, [(0, 21), (1024, 2047), (60000, 65535)]),
}


@pytest.mark.root
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("tag", [None, "profile"])
def test_apply_lists_as_nft_f_of_the_same_elements(
    kernel: tuple[str, nfsets.NfSets], shape: str, tag: str | None
) -> None:
    ns, sets = kernel
    width, interval, pairs = SHAPES[shape]
    spans = Spans.of(width, pairs)
    for table in ("appliance", "reference"):
        make_set(ns, table, "s", width, interval)
    assert sets.apply("s", width=width, interval=interval, add=spans, delete=None, tag=tag) == 1
    nft_add(ns, "reference", "s", width, interval, spans, tag)
    assert listed(ns, "appliance", "s") == listed(ns, "reference", "s")
    assert sets.dump("s", width=width, interval=interval) == {tag: spans}
    with nfsets.NfSets(table="reference", netns=ns) as reference:
        assert reference.dump("s", width=width, interval=interval) == {tag: spans}
        assert reference.count("s") == (len(spans) if interval else spans.count())


@pytest.mark.root
@pytest.mark.parametrize("interval", [False, True])
def test_a_delta_in_chunks_adds_deletes_and_ignores_what_is_already_so(
    kernel: tuple[str, nfsets.NfSets], interval: bool
) -> None:
    ns, sets = kernel
    make_set(ns, "appliance", "s", 32, interval)
    make_set(ns, "reference", "s", 32, interval)
    rng = random.Random(11)
    base = 1 << 28
    old = Spans.of(32, [(base + 8 * k, base + 8 * k + (1 if interval else 0)) for k in range(600)])
    sets.apply("s", width=32, interval=interval, add=old, delete=None, tag="profile")
    gone = Spans.of(32, [p for p in old if rng.random() < 0.3])
    new_pairs = [(base + 8 * k + 4, base + 8 * k + 4) for k in range(0, 600, 3)]
    added = Spans.of(32, new_pairs)
    absent = Spans.of(32, [(7, 7), (base - 10, base - 9)])
    before = sets.generation()
    done = sets.apply(
        "s",
        width=32,
        interval=interval,
        add=added.union(Spans.of(32, list(old)[-3:])),  # three already there
        delete=gone.union(absent),
        tag="profile",
        chunk=64,
    )
    assert done > 5
    expected = old.difference(gone).union(added)
    assert sets.dump("s", width=32, interval=interval) == {"profile": expected}
    assert sets.generation() >= before + done
    nft_add(ns, "reference", "s", 32, interval, old.difference(gone), "profile")
    nft_add(ns, "reference", "s", 32, interval, added, "profile")
    assert listed(ns, "appliance", "s") == listed(ns, "reference", "s")


@pytest.mark.root
def test_interval_delete_of_a_piece_of_an_element_leaves_the_element(
    kernel: tuple[str, nfsets.NfSets],
) -> None:
    ns, sets = kernel
    make_set(ns, "appliance", "s", 32, True)
    held = Spans.of(32, [(100, 200), (300, 400)])
    sets.apply("s", width=32, interval=True, add=held, delete=None)
    sets.apply(
        "s", width=32, interval=True, add=None, delete=Spans.of(32, [(100, 150), (300, 400)])
    )
    assert sets.dump("s", width=32, interval=True) == {None: Spans.of(32, [(100, 200)])}


@pytest.mark.root
def test_hash_delete_of_absent_values_without_destroy(kernel: tuple[str, nfsets.NfSets]) -> None:
    """A kernel before 6.3 has no DESTROYSETELEM: the delete falls back to the present."""
    ns, sets = kernel
    make_set(ns, "appliance", "s", 32, False)
    sets.apply("s", width=32, interval=False, add=Spans.of(32, [(1, 5)]), delete=None)
    sets._destroy = False
    sets.apply("s", width=32, interval=False, add=None, delete=Spans.of(32, [(4, 9)]))
    assert sets.dump("s", width=32, interval=False) == {None: Spans.of(32, [(1, 3)])}


@pytest.mark.parametrize(
    ("release", "known"),
    [
        ("6.3.0", True),
        ("6.18.44-fc-v1272", True),
        ("7.0", True),
        ("6.2.16-300.fc38.x86_64", False),
        ("5.10.0-28-arm64", False),
        ("6", False),
        ("x.y", False),
        ("", False),
    ],
)
def test_destroy_known_from_the_release(release: str, known: bool) -> None:
    assert nfsets.has_destroy(release) is known


@pytest.mark.root
@pytest.mark.parametrize("release", ["6.3.0", "5.10.0-28-amd64"])
def test_hash_delete_probes_only_where_the_release_does_not_tell(
    kernel: tuple[str, nfsets.NfSets], monkeypatch: pytest.MonkeyPatch, release: str
) -> None:
    """A release of 6.3 or later has DESTROYSETELEM: no probe transaction. An older one
    (or a backport) is probed; either way absent values are skipped."""
    real = os.uname()
    if nfsets.has_destroy(release) and not nfsets.has_destroy(real.release):
        pytest.skip(f"this kernel ({real.release}) is older than {release}")
    ns, sets = kernel
    make_set(ns, "appliance", "s", 32, False)
    sets.apply("s", width=32, interval=False, add=Spans.of(32, [(1, 5)]), delete=None)
    fields = (real.sysname, real.nodename, release, real.version, real.machine)
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(fields))
    probes: list[bool] = []
    probe = sets._probe_destroy

    def counted() -> bool:
        probes.append(True)
        return probe()

    monkeypatch.setattr(sets, "_probe_destroy", counted)
    sets.apply("s", width=32, interval=False, add=None, delete=Spans.of(32, [(4, 9)]))
    assert probes == ([] if release.startswith("6.") else [True])
    assert sets.dump("s", width=32, interval=False) == {None: Spans.of(32, [(1, 3)])}


@pytest.mark.root
@pytest.mark.parametrize("interval", [False, True])
def test_flush_and_refill_is_one_transaction(
    kernel: tuple[str, nfsets.NfSets], interval: bool
) -> None:
    ns, sets = kernel
    make_set(ns, "appliance", "s", 32, interval)
    first = Spans.of(32, [(k * 10, k * 10 + (3 if interval else 0)) for k in range(1, 5000)])
    sets.apply("s", width=32, interval=interval, add=first, delete=None, tag="hub", chunk=500)
    second = Spans.of(32, [(k * 10 + 5, k * 10 + 5) for k in range(1, 3000)])
    before = sets.generation()
    assert sets.apply("s", width=32, interval=interval, add=second, delete=None, flush=True) == 1
    assert sets.generation() == before + 1
    assert sets.dump("s", width=32, interval=interval) == {None: second}
    sets.apply("s", width=32, interval=interval, add=None, delete=None, flush=True)
    assert sets.dump("s", width=32, interval=interval) == {}
    assert sets.count("s") == 0


@pytest.mark.root
def test_nothing_to_do_sends_nothing(kernel: tuple[str, nfsets.NfSets]) -> None:
    ns, sets = kernel
    make_set(ns, "appliance", "s", 32, True)
    before = sets.generation()
    assert sets.apply("s", width=32, interval=True, add=Spans(32), delete=None) == 0
    assert sets.generation() == before
    assert sets.dump("s", width=32, interval=True) == {}


@pytest.mark.root
def test_refusals_are_one_line_naming_the_set_and_change_nothing(
    kernel: tuple[str, nfsets.NfSets],
) -> None:
    ns, sets = kernel
    make_set(ns, "appliance", "s", 32, False, size=4)
    sets.apply("s", width=32, interval=False, add=Spans.of(32, [(1, 2)]), delete=None)
    with pytest.raises(nfsets.KernelError) as full:
        sets.apply("s", width=32, interval=False, add=Spans.of(32, [(10, 14)]), delete=None)
    assert "set inet appliance s" in str(full.value) and "full" in str(full.value)
    assert "\n" not in str(full.value)
    assert sets.dump("s", width=32, interval=False) == {None: Spans.of(32, [(1, 2)])}
    with pytest.raises(nfsets.KernelError, match="set inet appliance nope: no such set"):
        sets.apply("nope", width=32, interval=False, add=Spans.of(32, [(1, 1)]), delete=None)
    with pytest.raises(nfsets.KernelError, match="holds a hash set of 32-bit keys"):
        sets.apply("s", width=32, interval=True, add=Spans.of(32, [(1, 1)]), delete=None)


def _udp_from(sources: list[str], target: str, port: int) -> list[str]:
    """In the namespace: one datagram from each source to ``target``; the sources whose
    datagram arrived (the last source is never blocked: its arrival ends the wait)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((target, port))
    receiver.settimeout(5.0)
    for source in sources:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind((source, 0))
            sender.sendto(source.encode(), (target, port))
    arrived = []
    while not arrived or arrived[-1] != sources[-1]:
        arrived.append(receiver.recv(64).decode())
    receiver.close()
    return arrived


@pytest.mark.root
def test_an_address_in_an_interval_set_is_dropped_one_outside_passes(
    kernel: tuple[str, nfsets.NfSets],
) -> None:
    from appliance.adapters.nsexec import run_in_netns

    ns, sets = kernel
    nft(
        ns,
        "-f",
        "-",
        stdin=(
            "table inet appliance { set s { type ipv4_addr; flags interval; }\n"
            "  chain input { type filter hook input priority 0; ip saddr @s counter drop; }; }\n"
        ),
    )
    for address in ("10.77.0.1", "10.77.1.1", "10.77.2.1", "10.77.9.9"):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    blocked = Spans.of(32, [(_v4("10.77.0.0"), _v4("10.77.1.255"))])
    sets.apply("s", width=32, interval=True, add=blocked, delete=None, tag="profile")
    sources = ["10.77.0.1", "10.77.1.1", "10.77.2.1"]
    assert run_in_netns(ns, _udp_from, sources, "10.77.9.9", 5353, timeout=10) == ["10.77.2.1"]
    assert "packets 2 " in nft(ns, "list", "chain", "inet", "appliance", "input")
    sets.apply("s", width=32, interval=True, add=None, delete=blocked)
    assert run_in_netns(ns, _udp_from, sources, "10.77.9.9", 5353, timeout=10) == sources


@pytest.mark.root
def test_a_socket_in_a_missing_namespace_is_a_one_line_error() -> None:
    with pytest.raises(nfsets.KernelError, match="network namespace"):
        nfsets.open_socket(f"absent-{uuid.uuid4().hex[:8]}")


@pytest.mark.root
@pytest.mark.parametrize("interval", [False, True])
def test_elements_of_two_tags_read_back_apart(
    kernel: tuple[str, nfsets.NfSets], interval: bool
) -> None:
    ns, sets = kernel
    make_set(ns, "appliance", "s", 32, interval)
    profile = Spans.of(32, [(100, 100), (300, 300 + (9 if interval else 0))])
    hub = Spans.of(32, [(200, 200), (TOP32 - 3 if interval else TOP32, TOP32)])
    sets.apply("s", width=32, interval=interval, add=profile, delete=None, tag="profile")
    sets.apply("s", width=32, interval=interval, add=hub, delete=None, tag="hub")
    assert sets.dump("s", width=32, interval=interval) == {"profile": profile, "hub": hub}


@pytest.mark.root
def test_an_interval_reaching_the_top_alone(kernel: tuple[str, nfsets.NfSets]) -> None:
    ns, sets = kernel
    for table in ("appliance", "reference"):
        make_set(ns, table, "s", 32, True)
    top = Spans.of(32, [(_v4("255.255.255.128"), TOP32)])
    sets.apply("s", width=32, interval=True, add=top, delete=None, tag="hub")
    nft_add(ns, "reference", "s", 32, True, top, "hub")
    assert listed(ns, "appliance", "s") == listed(ns, "reference", "s")
    assert sets.dump("s", width=32, interval=True) == {"hub": top}
    sets.apply("s", width=32, interval=True, add=None, delete=top)
    assert sets.dump("s", width=32, interval=True) == {}
