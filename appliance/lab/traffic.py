"""Traffic inside the lab: probes, servers and captures, each run inside a namespace.

Every function forks a child that enters the namespace, does the socket work and sends the
result back (:mod:`appliance.lab.nsexec`). Everything is bounded in time and count, and the
context managers always stop and reap their child.

Probe outcomes:

- ``"open"``: the peer answered (TCP handshake completed, UDP echo came back, echo reply);
- ``"refused"``: rejected at once (TCP reset, ICMP unreachable / prohibited, or refused by
  the sender's own firewall);
- ``"timeout"``: nothing came back in time (dropped).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Literal

from appliance.adapters.nsexec import Worker, run_in_netns

Outcome = Literal["open", "refused", "timeout"]
ServeProto = Literal["tcp", "udp", "both"]

# Errors that mean "rejected": a reset, an ICMP unreachable / administratively prohibited,
# or the sending host's own firewall refusing the packet.
_REJECTED = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EACCES,
        errno.EPERM,
    }
)
_MARGIN = 3.0  # extra seconds the parent waits for a child beyond the probe's own timeout


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def normalize(addr: str) -> str:
    """A peer address as text, with IPv4-mapped IPv6 addresses shown as IPv4."""
    if addr.startswith("::ffff:") and "." in addr:
        return addr[len("::ffff:") :]
    return addr.split("%", 1)[0]


def _classify(err: int) -> Outcome:
    if err == 0:
        return "open"
    if err in _REJECTED:
        return "refused"
    if err in (errno.ETIMEDOUT, errno.EINPROGRESS, errno.EALREADY):
        return "timeout"
    raise OSError(err, os.strerror(err))


# -- TCP ---------------------------------------------------------------------------------


def _connect_all(
    addr: str,
    port: int,
    count: int,
    timeout: float,
    source: str | None,
    parallel: bool,
) -> tuple[list[Outcome], list[socket.socket | None]]:
    """Open ``count`` connections; returns the outcomes and the sockets (None unless open)."""
    fam = _family(addr)
    outcomes: list[Outcome] = []
    socks: list[socket.socket | None] = []
    pending: dict[int, int] = {}  # fileno -> position
    all_socks: list[socket.socket] = []
    deadline = time.monotonic() + timeout

    def start() -> socket.socket:
        s = socket.socket(fam, socket.SOCK_STREAM)
        all_socks.append(s)
        if source is not None:
            s.bind((source, 0))
        s.setblocking(False)
        err = s.connect_ex((addr, port))
        if err not in (0, errno.EINPROGRESS):
            outcomes.append(_classify(err))
            socks.append(None)
        else:
            outcomes.append("timeout")
            socks.append(s)
            pending[s.fileno()] = len(outcomes) - 1
        return s

    def settle(until: float) -> None:
        while pending:
            left = until - time.monotonic()
            if left <= 0:
                break
            _, writable, _ = select.select([], list(pending), [], left)
            for fd in writable:
                pos = pending.pop(fd)
                s = socks[pos]
                assert s is not None
                outcome = _classify(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
                outcomes[pos] = outcome
                if outcome != "open":
                    socks[pos] = None

    for _ in range(count):
        start()
        if not parallel:
            settle(time.monotonic() + timeout)
            for pos in pending.values():  # not answered in time
                socks[pos] = None
            pending.clear()
    if parallel:
        settle(deadline)
        for pos in pending.values():
            socks[pos] = None
        pending.clear()
    for s in all_socks:
        if s not in socks:
            s.close()
    return outcomes, socks


def _tcp_connect_child(
    addr: str, port: int, count: int, timeout: float, source: str | None, parallel: bool
) -> list[Outcome]:
    outcomes, socks = _connect_all(addr, port, count, timeout, source, parallel)
    for s in socks:
        if s is not None:
            s.close()
    return outcomes


def tcp_connect(
    ns: str, addr: str, port: int, timeout: float = 1.0, *, source: str | None = None
) -> Outcome:
    """Try one TCP connection from ``ns`` to ``addr:port``."""
    (outcome,) = run_in_netns(
        ns, _tcp_connect_child, addr, port, 1, timeout, source, False, timeout=timeout + _MARGIN
    )
    return outcome


def tcp_connect_many(
    ns: str,
    addr: str,
    port: int,
    count: int,
    timeout: float = 1.0,
    *,
    source: str | None = None,
    parallel: bool = True,
) -> list[Outcome]:
    """Open ``count`` connections (by default all at once, a burst of SYNs); their outcomes."""
    if not 0 < count <= 1000:
        raise ValueError("count: 1 to 1000")
    budget = timeout if parallel else timeout * count
    return run_in_netns(
        ns,
        _tcp_connect_child,
        addr,
        port,
        count,
        timeout,
        source,
        parallel,
        timeout=budget + _MARGIN,
    )


def _echo_once(socks: Sequence[socket.socket | None], token: bytes, timeout: float) -> list[str]:
    results: list[str] = []
    live: dict[int, tuple[int, socket.socket, bytearray]] = {}
    for pos, s in enumerate(socks):
        results.append("closed")
        if s is None:
            continue
        try:
            s.send(token)
        except OSError:
            results[pos] = "refused"  # reset (EPIPE, ECONNRESET) or unreachable
            continue
        results[pos] = "timeout"
        live[s.fileno()] = (pos, s, bytearray())
    deadline = time.monotonic() + timeout
    while live:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select(list(live), [], [], left)
        for fd in readable:
            pos, s, buf = live[fd]
            try:
                data = s.recv(65536)
            except OSError as exc:
                results[pos] = "refused" if exc.errno in _REJECTED else "timeout"
                del live[fd]
                continue
            if not data:
                results[pos] = "refused"  # closed by the peer
                del live[fd]
                continue
            buf += data
            if token in buf:
                results[pos] = "open"
                del live[fd]
    return results


def _connections_child(
    conn: Connection,
    addr: str,
    port: int,
    count: int,
    timeout: float,
    source: str | None,
    parallel: bool,
) -> None:
    outcomes, socks = _connect_all(addr, port, count, timeout, source, parallel)
    conn.send(outcomes)
    serial = 0
    while True:
        msg = conn.recv()
        if msg[0] == "echo":
            serial += 1
            token = f"echo-{os.getpid()}-{serial}\n".encode()
            conn.send(_echo_once(socks, token, float(msg[1])))
        elif msg[0] == "close":
            for s in socks:
                if s is not None:
                    s.close()
            conn.send("closed")
            return


class Connections:
    """TCP connections held open from one namespace (see :func:`connections`)."""

    def __init__(self, worker: Worker, outcomes: list[Outcome]) -> None:
        self._worker = worker
        self.outcomes = outcomes

    @property
    def open_count(self) -> int:
        return sum(1 for o in self.outcomes if o == "open")

    def echo(self, timeout: float = 1.0) -> list[str]:
        """Send a line on every connection and wait for the server to echo it.

        One result per connection: ``"open"`` (echoed), ``"timeout"``, ``"refused"`` (reset
        or closed), or ``"closed"`` for a connection that never opened.
        """
        result: list[str] = self._worker.request(("echo", timeout), timeout + _MARGIN)
        return result


@contextlib.contextmanager
def connections(
    ns: str,
    addr: str,
    port: int,
    count: int = 1,
    timeout: float = 1.0,
    *,
    source: str | None = None,
    parallel: bool = False,
    lifetime: float = 300.0,
) -> Iterator[Connections]:
    """Open ``count`` TCP connections from ``ns`` and hold them until the block ends.

    The connections are opened one after the other (``parallel=False``) so that a per-source
    connection limit sees them in order. Use with a server from :func:`serve`, which echoes.
    """
    if not 0 < count <= 1000:
        raise ValueError("count: 1 to 1000")
    budget = timeout if parallel else timeout * count
    worker = Worker(
        ns, _connections_child, addr, port, count, timeout, source, parallel, lifetime=lifetime
    )
    try:
        outcomes = worker.recv(budget + _MARGIN)
        yield Connections(worker, outcomes)
    finally:
        worker.close()


# -- UDP ---------------------------------------------------------------------------------


def _udp_probe_child(
    addr: str, port: int, timeout: float, source: str | None, payload: bytes, sport: int
) -> Outcome:
    with socket.socket(_family(addr), socket.SOCK_DGRAM) as s:
        if source is not None or sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((source or "", sport))
        s.connect((addr, port))
        s.settimeout(timeout)
        try:
            s.send(payload)
            deadline = time.monotonic() + timeout
            while True:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                data = s.recv(65536)
                if data == payload:
                    return "open"
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return _classify(exc.errno or 0)


def udp_probe(
    ns: str,
    addr: str,
    port: int,
    timeout: float = 1.0,
    *,
    source: str | None = None,
    payload: bytes = b"probe",
    sport: int = 0,
) -> Outcome:
    """Send one datagram from ``ns`` to a UDP echo server at ``addr:port`` and wait for it back.

    ``source``/``sport``: the source address and port to send from (default: the kernel's).
    """
    return run_in_netns(
        ns,
        _udp_probe_child,
        addr,
        port,
        timeout,
        source,
        payload,
        sport,
        timeout=timeout + _MARGIN,
    )


# -- ICMP --------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ping_child(addr: str, timeout: float) -> Outcome:
    ident = os.getpid() & 0xFFFF
    seq = 1
    payload = b"appliance-lab-ping"
    v6 = ":" in addr
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        # The kernel fills in the ICMPv6 checksum (it covers the IPv6 pseudo-header).
        request = struct.pack("!BBHHH", 128, 0, 0, ident, seq) + payload
        echo_reply, unreachable = 129, 1
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        csum = _checksum(header + payload)
        request = struct.pack("!BBHHH", 8, 0, csum, ident, seq) + payload
        echo_reply, unreachable = 0, 3
    want = socket.inet_pton(_family(addr), addr)
    with s:
        s.sendto(request, (addr, 0))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            readable, _, _ = select.select([s], [], [], left)
            if not readable:
                return "timeout"
            data, peer = s.recvfrom(65536)
            if not v6:
                data = data[(data[0] & 0x0F) * 4 :]  # strip the IPv4 header
            if len(data) < 8:
                continue
            icmp_type = data[0]
            if icmp_type == echo_reply:
                rid, rseq = struct.unpack("!HH", data[4:8])
                src = socket.inet_pton(_family(addr), normalize(peer[0]))
                if rid == ident and rseq == seq and src == want:
                    return "open"
            elif icmp_type == unreachable:
                inner = data[8:]
                if v6:
                    quoted = inner[40:48]
                else:
                    if not inner:
                        continue
                    quoted = inner[(inner[0] & 0x0F) * 4 :][:8]
                if len(quoted) == 8 and struct.unpack("!H", quoted[4:6])[0] == ident:
                    return "refused"


def ping(ns: str, addr: str, timeout: float = 1.0) -> Outcome:
    """One ICMP (or ICMPv6) echo request from ``ns`` to ``addr``.

    ``"open"``: an echo reply came back; ``"refused"``: an ICMP unreachable did.
    """
    return run_in_netns(ns, _ping_child, addr, timeout, timeout=timeout + _MARGIN)


# -- raw packets -------------------------------------------------------------------------


def _send_raw_child(packets: list[bytes]) -> int:
    sent = 0
    for packet in packets:
        version = packet[0] >> 4
        if version == 6:
            dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
            with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
                s.sendto(packet, (dst, 0))
        else:
            dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
                s.sendto(packet, (dst, 0))
        sent += 1
    return sent


def send_raw(ns: str, packets: bytes | Iterable[bytes]) -> int:
    """Send complete IP packets (header included, any source address) from ``ns``.

    The kernel routes them by destination and sends them as they are. Returns the count sent.
    """
    batch = [packets] if isinstance(packets, bytes | bytearray) else list(packets)
    if len(batch) > 10000:
        raise ValueError("at most 10000 packets at a time")
    return run_in_netns(ns, _send_raw_child, [bytes(p) for p in batch], timeout=30.0)


# -- servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One peer a server saw: a TCP connection accepted or a UDP datagram received."""

    proto: Literal["tcp", "udp"]
    port: int
    peer: str


def _serve_child(conn: Connection, protos: tuple[str, ...], ports: tuple[int, ...]) -> None:
    sel = selectors.DefaultSelector()
    seen: list[Seen] = []
    listeners: list[socket.socket] = []
    for port in ports:
        for proto in protos:
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            if proto == "tcp":
                s.listen(512)
            s.setblocking(False)
            listeners.append(s)
            sel.register(s, selectors.EVENT_READ, (proto, port, "listen"))
    sel.register(conn.fileno(), selectors.EVENT_READ, ("ctl", 0, "ctl"))
    conn.send("ready")
    while True:
        for key, _ in sel.select(timeout=1.0):
            proto, port, role = key.data
            if role == "ctl":
                msg = conn.recv()
                if msg == "peers":
                    conn.send(list(seen))
                elif msg == "stop":
                    conn.send("stopped")
                    return
            elif role == "listen" and proto == "tcp":
                assert isinstance(key.fileobj, socket.socket)
                try:
                    client, peer = key.fileobj.accept()
                except OSError:
                    continue
                seen.append(Seen("tcp", port, normalize(peer[0])))
                client.setblocking(False)
                sel.register(client, selectors.EVENT_READ, ("tcp", port, "client"))
            elif role == "listen":
                assert isinstance(key.fileobj, socket.socket)
                try:
                    data, peer = key.fileobj.recvfrom(65536)
                except OSError:
                    continue
                seen.append(Seen("udp", port, normalize(peer[0])))
                with contextlib.suppress(OSError):
                    key.fileobj.sendto(data, peer)
            else:
                assert isinstance(key.fileobj, socket.socket)
                try:
                    data = key.fileobj.recv(65536)
                    if data:
                        key.fileobj.sendall(data)
                        continue
                except OSError:
                    pass
                sel.unregister(key.fileobj)
                key.fileobj.close()


class Server:
    """A running server (see :func:`serve`)."""

    def __init__(self, worker: Worker, ns: str, ports: tuple[int, ...]) -> None:
        self._worker = worker
        self.ns = ns
        self.ports = ports

    def seen(self) -> list[Seen]:
        """Every connection and datagram so far, in order."""
        result: list[Seen] = self._worker.request("peers", 5.0)
        return result

    def peers(self, proto: str | None = None, port: int | None = None) -> list[str]:
        """The peer addresses seen (as the server sees them: after any NAT)."""
        return [
            s.peer
            for s in self.seen()
            if (proto is None or s.proto == proto) and (port is None or s.port == port)
        ]


@contextlib.contextmanager
def serve(
    ns: str,
    proto: ServeProto = "both",
    port: int | Sequence[int] = 8080,
    *,
    lifetime: float = 600.0,
) -> Iterator[Server]:
    """Run a TCP echo and/or UDP echo server on every address (IPv4 and IPv6) inside ``ns``.

    It records the peer of every TCP connection and UDP datagram. Stopped when the block ends.
    """
    ports = (port,) if isinstance(port, int) else tuple(port)
    if not ports or len(ports) > 64 or not all(0 < p < 65536 for p in ports):
        raise ValueError(f"ports: 1 to 64 ports in 1..65535, not {ports}")
    protos = ("tcp", "udp") if proto == "both" else (proto,)
    worker = Worker(ns, _serve_child, protos, ports, lifetime=lifetime)
    try:
        worker.recv(10.0)  # "ready": listening
        yield Server(worker, ns, ports)
    finally:
        worker.close()


# -- capture -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    outgoing: bool  # sent by this namespace (else received)
    data: bytes  # the Ethernet frame


_PACKET_OUTGOING = 4
_ETH_P_ALL = 0x0003


def _capture_child(conn: Connection, ifname: str, max_frames: int) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    s.bind((ifname, 0))
    frames: list[Frame] = []
    conn.send("ready")
    while True:
        readable, _, _ = select.select([s.fileno(), conn.fileno()], [], [], 1.0)
        if s.fileno() in readable:
            data, address = s.recvfrom(65536)
            if len(frames) < max_frames:
                frames.append(Frame(address[2] == _PACKET_OUTGOING, data))
        if conn.fileno() in readable:
            message = conn.recv()
            # Everything that arrived before the request counts, read or not.
            s.setblocking(False)
            while len(frames) < max_frames:
                try:
                    data, address = s.recvfrom(65536)
                except BlockingIOError:
                    break
                frames.append(Frame(address[2] == _PACKET_OUTGOING, data))
            s.setblocking(True)
            conn.send(frames)
            if message != "peek":
                return


class Capture:
    """A running capture (see :func:`capture`)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._frames: list[Frame] | None = None

    def stop(self) -> list[Frame]:
        """Stop capturing; the frames seen. Idempotent."""
        if self._frames is None:
            self._frames = self._worker.request("stop", 10.0)
            self._worker.close()
        return self._frames

    @property
    def frames(self) -> list[Frame]:
        return self.stop()

    def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 10.0) -> list[Frame]:
        """Keep capturing until a frame for which ``predicate`` is true has been seen (or
        ``timeout`` seconds have passed); the frames seen so far. Waiting for a frame sent
        after the one a test asserts on tells, as no fixed pause can on a busy machine, that
        the asserted frame would have arrived by now."""
        if self._frames is not None:
            return self._frames
        deadline = time.monotonic() + timeout
        while True:
            frames: list[Frame] = self._worker.request("peek", 10.0)
            if any(predicate(frame) for frame in frames) or time.monotonic() >= deadline:
                return frames
            time.sleep(0.05)


@contextlib.contextmanager
def capture(
    ns: str, ifname: str = "eth0", *, max_frames: int = 10000, lifetime: float = 120.0
) -> Iterator[Capture]:
    """Capture the frames of ``ifname`` inside ``ns`` (both directions) until stopped."""
    worker = Worker(ns, _capture_child, ifname, max_frames, lifetime=lifetime)
    try:
        worker.recv(10.0)
        cap = Capture(worker)
        yield cap
        cap.stop()
    finally:
        worker.close()
