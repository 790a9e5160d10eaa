"""The TLS handshake in clear: JA3 / JA3S and the server's certificates.

Each direction of a TLS flow is reassembled in order (its own bounded ``Reassembler``) from
its first payload byte, and its handshake records are read until the first record that is
not a handshake (ChangeCipherSpec, application data, an alert) or ``HANDSHAKE_MAX`` bytes.
From the client: the ClientHello's JA3 (``ja3.string``, ``ja3.hash``); from the server:
the ServerHello's JA3S (``ja3s.*``) and the Certificate message (TLS 1.0 to 1.2: TLS 1.3
encrypts it) as Suricata presents it: ``tls.cert_subject`` and ``tls.cert_issuer`` of the
first certificate (``C=US, O=Example, CN=host``), ``tls.cert_serial`` (``5C:19:B7``),
``tls.cert_fingerprint`` (SHA-1, ``4a:a3:66``), ``tls.cert_validity`` (``valid``,
``expired`` or ``notyet`` at the packet's time) and ``tls.certs`` (each certificate, DER).
For ``tls.version`` / ``ssl_version``: the version each hello gives (``tls:version``; TLS 1.3
from the supported_versions extension, as Suricata reads it), kept for the flow's direction
as Suricata keeps it in the flow's TLS state: every later segment of that direction that
the rules see has it, and a rule reading it alerts once per flow direction (``once``); for
``ssl_state``: the
handshake messages a segment completes (``tls:state``: client_hello, server_hello,
client_keyx, server_keyx, unknown), read until the handshake turns encrypted; for
``tls.cert_chain_len``: the certificates the server sent (``tls:chain_len``).

Only directions whose buffers a loaded rule reads are followed, and only on flows whose
protocol is TLS. Bad input is counted (``tls.bad_certificate``, ``tls.handshake_too_long``,
``tls.not_handshake``) and ends the direction; nothing raises.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
from collections import OrderedDict
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from itertools import filterfalse
from typing import Any

from cryptography import x509

from appliance.inspect.decode import Errors, Layer, count
from appliance.inspect.fields import SSL_STATES, TLS_CHAIN, TLS_STATE, TLS_VERSION
from appliance.inspect.rules import MultiBuffer
from appliance.inspect.stream import Reassembler, StreamDirection

HANDSHAKE_MAX = 64 * 1024  # bytes of a direction's handshake read at most
MAX_PENDING = 1 << 20  # out-of-order handshake bytes held in all flows
MAX_BYTES = 16 << 20  # in-order handshake bytes held in all flows
MAX_FLOWS = 8192  # flow directions whose handshake state is kept (the oldest go first)
CLIENT_BUFFERS = frozenset({"ja3.hash", "ja3.string", TLS_VERSION, TLS_STATE})
SERVER_BUFFERS = frozenset(
    {
        TLS_VERSION,
        TLS_STATE,
        TLS_CHAIN,
        "ja3s.hash",
        "ja3s.string",
        "tls.cert_subject",
        "tls.cert_issuer",
        "tls.cert_serial",
        "tls.cert_fingerprint",
        "tls.cert_validity",
        "tls.cert_notbefore",
        "tls.cert_notafter",
        "tls.certs",
    }
)
TLS_BUFFERS = CLIENT_BUFFERS | SERVER_BUFFERS
CERT_BUFFERS = SERVER_BUFFERS - {"ja3s.hash", "ja3s.string", TLS_VERSION, TLS_STATE}
# the buffers that need the certificate parsed
_PARSED = CERT_BUFFERS - {"tls.certs", "tls.cert_fingerprint", TLS_CHAIN}
# handshake message types ssl_state does not count as "unknown" (RFC 5246, RFC 8446)
_KNOWN_MESSAGES = frozenset({0, 1, 2, 4, 5, 8, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24})
_STATE_OF = {1: SSL_STATES["client_hello"], 2: SSL_STATES["server_hello"]}
_STATE_OF.update({16: SSL_STATES["client_keyx"], 12: SSL_STATES["server_keyx"]})
TLS13 = 0x0304

_u16 = struct.Struct("!H").unpack_from
_u16_pair = struct.Struct("!HH").unpack_from
_DONE = "done"

# x509 attribute names as Suricata writes them (others: the dotted OID)
_ATTR_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.5": "serialNumber",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}


def is_grease(value: int) -> bool:
    """A GREASE value (RFC 8701: 0x0a0a, 0x1a1a, ... 0xfafa), left out of JA3."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


_GREASE = frozenset(v for v in range(0x0A0A, 0x10000, 0x1010) if is_grease(v))
_in_grease = _GREASE.__contains__


def _join(values: Iterable[int]) -> str:
    return "-".join(map(str, filterfalse(_in_grease, values)))


def _u16_list(data: bytes) -> list[int]:
    return list(struct.unpack_from(f"!{len(data) >> 1}H", data))


def ja3_client(body: bytes) -> str | None:
    """The JA3 string of a ClientHello's body (after its 4-byte handshake header)."""
    try:
        version = _u16(body, 0)[0]
        pos = 34
        pos += 1 + body[pos]  # session id
        size = _u16(body, pos)[0]
        ciphers = _u16_list(body[pos + 2 : pos + 2 + size])
        pos += 2 + size
        pos += 1 + body[pos]  # compression methods
    except (IndexError, struct.error):
        return None
    # the extensions (as _extensions reads them), only two of them sliced
    extensions: list[int] = []
    groups: Iterable[int] = ()
    formats: Iterable[int] = ()
    if pos + 2 <= len(body):
        end = min(len(body), pos + 2 + _u16(body, pos)[0])
        pos += 2
        while pos + 4 <= end:
            etype, size = _u16_pair(body, pos)
            pos += 4
            extensions.append(etype)
            if etype == 10 or etype == 11:
                data = body[pos : pos + size]
                if etype == 10 and len(data) >= 2:  # supported_groups
                    groups = _u16_list(data[2 : 2 + _u16(data, 0)[0]])
                elif etype == 11 and data:  # ec_point_formats
                    formats = data[1 : 1 + data[0]]
            pos += size
    return ",".join(
        (str(version), _join(ciphers), _join(extensions), _join(groups), _join(formats))
    )


def ja3_server(body: bytes) -> str | None:
    """The JA3S string of a ServerHello's body."""
    try:
        version = _u16(body, 0)[0]
        pos = 34
        pos += 1 + body[pos]  # session id
        cipher = _u16(body, pos)[0]
        pos += 3  # cipher suite, compression method
    except (IndexError, struct.error):
        return None
    extensions = [etype for etype, _ in _extensions(body, pos)]
    return ",".join((str(version), str(cipher), _join(extensions)))


def _extensions(body: bytes, pos: int) -> list[tuple[int, bytes]]:
    if pos + 2 > len(body):
        return []
    end = min(len(body), pos + 2 + _u16(body, pos)[0])
    pos += 2
    out = []
    while pos + 4 <= end:
        etype, size = _u16_pair(body, pos)
        pos += 4
        out.append((etype, body[pos : pos + size]))
        pos += size
    return out


def hello_version(body: bytes, client: bool) -> int | None:
    """The version a hello gives: its supported_versions extension's (the client's: 1.3 if
    it offers 1.3 or a draft of it; the server's: the one it chose), else its legacy
    version field."""
    if len(body) < 2:
        return None
    version: int = _u16(body, 0)[0]
    try:
        pos = 34
        pos += 1 + body[pos]  # session id
        if client:
            pos += 2 + _u16(body, pos)[0]  # cipher suites
            pos += 1 + body[pos]  # compression methods
        else:
            pos += 3  # cipher suite, compression method
    except (IndexError, struct.error):
        return version
    for etype, data in _extensions(body, pos):
        if etype != 43:  # supported_versions
            continue
        if not client:
            chosen: int = _u16(data, 0)[0] if len(data) >= 2 else version
            return chosen
        offered = _u16_list(data[1 : 1 + data[0]]) if data else []
        if any(v == TLS13 or v >> 8 == 0x7F for v in offered):
            return TLS13
    return version


def hello_fields(
    body: bytes, client: bool, ja3: bool, version: bool
) -> tuple[bytes | None, int | None]:
    """What a hello's body gives the rules, each only when asked: its JA3 string (a
    ClientHello, ``client``) or JA3S string (a ServerHello), ASCII, and the version it gives
    (``hello_version``). The compiled core has its own (``_fastpath.hello_fields``)."""
    text = (ja3_client(body) if client else ja3_server(body)) if ja3 else None
    return (
        text.encode() if text is not None else None,
        hello_version(body, client) if version else None,
    )


def certificates(body: bytes) -> list[bytes]:
    """The DER certificates of a TLS 1.0-1.2 Certificate message's body."""
    if len(body) < 3:
        return []
    end = min(len(body), 3 + int.from_bytes(body[:3], "big"))
    pos = 3
    out = []
    while pos + 3 <= end:
        size = int.from_bytes(body[pos : pos + 3], "big")
        pos += 3
        if pos + size > end:
            break
        out.append(body[pos : pos + size])
        pos += size
    return out


def name_text(name: x509.Name) -> str:
    """A distinguished name as Suricata writes it: ``C=US, O=Example, CN=host``."""
    parts = []
    for rdn in name.rdns:
        parts.append(
            " + ".join(
                f"{_ATTR_NAMES.get(a.oid.dotted_string, a.oid.dotted_string)}={a.value!s}"
                for a in rdn
            )
        )
    return ", ".join(parts)


def serial_text(serial: int) -> str:
    """The serial number's DER bytes, upper-case colon hex (``00:80`` for 128; a negative
    one, which RFC 5280 forbids but certificates carry, in two's complement: ``80`` for
    -128)."""
    size = max(1, ((serial if serial >= 0 else ~serial).bit_length() + 8) // 8)
    return ":".join(f"{b:02X}" for b in serial.to_bytes(size, "big", signed=True))


def fingerprint_text(der: bytes) -> str:
    return ":".join(f"{b:02x}" for b in hashlib.sha1(der).digest())


def cert_buffers(
    chain: list[bytes], wanted: AbstractSet[str], ts: float, errors: Errors
) -> dict[str, bytes]:
    """The certificate buffers ``wanted`` of a server's chain (the first is the server's)."""
    out: dict[str, bytes] = {}
    if not chain:
        return out
    if TLS_CHAIN in wanted:
        out[TLS_CHAIN] = len(chain).to_bytes(4, "big")
    if "tls.certs" in wanted:
        out["tls.certs"] = MultiBuffer.of(chain)
    first = chain[0]
    if "tls.cert_fingerprint" in wanted:
        out["tls.cert_fingerprint"] = fingerprint_text(first).encode()
    if not wanted & _PARSED:
        return out
    try:
        cert = x509.load_der_x509_certificate(first)
        subject, issuer = name_text(cert.subject), name_text(cert.issuer)
        serial = serial_text(cert.serial_number)
        before, after = cert.not_valid_before, cert.not_valid_after
    except (ValueError, TypeError, KeyError, x509.InvalidVersion):
        # (KeyError: a name's string of an unknown ASN.1 type)
        count(errors, "tls.bad_certificate")
        return out
    out["tls.cert_subject"] = subject.encode("utf-8", "surrogateescape")
    out["tls.cert_issuer"] = issuer.encode("utf-8", "surrogateescape")
    out["tls.cert_serial"] = serial.encode()
    now = datetime.datetime.fromtimestamp(ts, datetime.UTC).replace(tzinfo=None)
    state = b"expired" if now > after else b"notyet" if now < before else b"valid"
    out["tls.cert_validity"] = state
    out["tls.cert_notbefore"] = _epoch(before)
    out["tls.cert_notafter"] = _epoch(after)
    return out


def _epoch(when: datetime.datetime) -> bytes:
    seconds = int(when.replace(tzinfo=datetime.UTC).timestamp())
    return seconds.to_bytes(8, "big", signed=True)


class _Direction:
    __slots__ = ("handshake", "read", "stream")

    def __init__(self, stream: StreamDirection | None) -> None:
        self.stream = stream  # None: its first segment, read in place (see feed)
        self.read = 0  # bytes of the stream's records taken
        self.handshake = bytearray()  # handshake bytes not yet taken as messages


class _Known:
    """What a flow direction's handshake told that lasts: its version, and the rules
    reading it that alerted already."""

    __slots__ = ("alerted", "flow", "version")

    def __init__(self, flow: Any, version: bytes) -> None:
        self.flow = flow
        self.version = version
        self.alerted: set[int] = set()


class TlsHandshakes:
    """The handshakes of TLS flows, for the buffers ``wanted`` by the loaded rules."""

    def __init__(self, wanted: AbstractSet[str]) -> None:
        self.wanted = frozenset(wanted) & TLS_BUFFERS
        self.client = bool(self.wanted & CLIENT_BUFFERS)
        # what the messages' reader asks of a hello
        self._ja3 = bool(self.wanted & {"ja3.hash", "ja3.string"})
        self._ja3s = bool(self.wanted & {"ja3s.hash", "ja3s.string"})
        self._version = TLS_VERSION in self.wanted
        # hello_fields, or the compiled core's (set by the engine that loads it)
        self.hello_fields: Any = hello_fields
        # a client's first segment holding one whole ClientHello, alone in its record, is
        # read without the records' and messages' walk (as they would read it), unless a
        # rule reads ssl_state (every message counts there)
        self.whole_hellos = TLS_STATE not in self.wanted
        self.server = bool(self.wanted & SERVER_BUFFERS)
        self.streams = Reassembler(HANDSHAKE_MAX, MAX_PENDING, MAX_BYTES)
        # by (flow key, direction): the flow and its direction's state, or _DONE
        self._states: OrderedDict[tuple[bytes, bool], tuple[Any, _Direction | str]] = OrderedDict()
        # by (flow key, direction): the version its hello gave (only with a rule reading it)
        self._known: OrderedDict[tuple[bytes, bool], _Known] = OrderedDict()

    def known(self, flow: Any, to_server: bool, buffers: dict[str, bytes]) -> None:
        """Add the version this flow direction's hello gave, when a rule reads it."""
        if TLS_VERSION in buffers or not self._known:
            return
        entry = self._known.get((flow.key, to_server))
        if entry is not None and entry.flow is flow:
            buffers[TLS_VERSION] = entry.version

    def once(self, flow: Any, to_server: bool, hits: list[Any]) -> list[Any]:
        """The hits that alert: a rule reading the version alerts once per flow direction,
        as Suricata matches a rule once on a flow's TLS state."""
        entry = self._known.get((flow.key, to_server)) if self._known else None
        if entry is None or entry.flow is not flow:
            return hits
        out = []
        for sig in hits:
            if any(c.buffer == TLS_VERSION for c in sig.contents):
                if sig.sid in entry.alerted:
                    continue
                entry.alerted.add(sig.sid)
            out.append(sig)
        return out

    def _keep_version(self, flow: Any, to_server: bool, version: bytes) -> None:
        known = self._known
        key = (flow.key, to_server)
        known.pop(key, None)
        known[key] = _Known(flow, version)
        if len(known) > MAX_FLOWS:
            known.popitem(last=False)

    def _state(self, flow: Any, to_server: bool) -> _Direction | str | None:
        entry = self._states.get((flow.key, to_server))
        if entry is None or entry[0] is not flow:
            return None
        return entry[1]

    def _set(self, flow: Any, to_server: bool, state: _Direction | str) -> None:
        states = self._states
        key = (flow.key, to_server)
        old = states.pop(key, None)
        if old is not None and isinstance(old[1], _Direction) and old[1] is not state:
            self._close(old[1])
        states[key] = (flow, state)
        if len(states) > MAX_FLOWS:
            _, (_, oldest) = states.popitem(last=False)
            if isinstance(oldest, _Direction):
                self._close(oldest)

    def _close(self, direction: _Direction) -> None:
        if direction.stream is not None:
            self.streams.close(direction.stream)

    def pending(self, flow: Any, to_server: bool) -> bool:
        """Whether this direction's handshake is still to be read."""
        if not (self.client if to_server else self.server):
            return False
        return self._state(flow, to_server) is not _DONE

    def feed(
        self,
        ts: float,
        flow: Any,
        to_server: bool,
        layer: Layer,
        buffers: dict[str, bytes],
        errors: Errors,
    ) -> bool:
        """Take a segment of a TLS flow; add the buffers of the messages it completes.
        True when the direction's handshake is over (nothing more to read in it)."""
        state = self._state(flow, to_server)
        if state is _DONE:
            return True
        if not (self.client if to_server else self.server):
            self._set(flow, to_server, _DONE)
            return True
        if not isinstance(state, _Direction):
            payload = layer.payload
            if state is None and to_server and self.whole_hellos and _whole_hello(payload):
                self._hello(bytes(payload[9:]), True, True, buffers)
                return self._read(flow, to_server, buffers, True)
            if len(payload) < HANDSHAKE_MAX:
                # The direction's first segment, read in place (a ClientHello in one
                # segment: the usual case): its stream is opened, and the segment taken
                # into it, only if its handshake goes on past it.
                state = _Direction(None)
                done = self._records(ts, state, payload, to_server, buffers, errors)
                if not done:
                    state.stream = self.streams.open(layer.seq, False)
                    self._set(flow, to_server, state)
                    self.streams.add(state.stream, layer.seq, payload, errors)
                return self._read(flow, to_server, buffers, done)
            state = _Direction(self.streams.open(layer.seq, False))
            self._set(flow, to_server, state)
        stream = state.stream
        assert stream is not None
        if not self.streams.add(stream, layer.seq, layer.payload, errors):
            if stream.full and not stream.pending:  # the bound, or memory
                count(errors, "tls.handshake_too_long")
                self._set(flow, to_server, _DONE)
                return True
            return False
        done = self._records(ts, state, stream.data, to_server, buffers, errors)
        return self._read(flow, to_server, buffers, done)

    def _hello(self, body: bytes, client: bool, own: bool, buffers: dict[str, bytes]) -> None:
        """A hello's buffers (a ClientHello's, ``client``, or a ServerHello's): the version
        it gives, and its JA3 (or JA3S) where the side that sends it (``own``) is read."""
        ja3 = own and (self._ja3 if client else self._ja3s)
        if ja3 or self._version:
            text, version = self.hello_fields(body, client, ja3, self._version)
            if version is not None:
                buffers[TLS_VERSION] = version.to_bytes(2, "big")
            if text is not None:
                name = "ja3" if client else "ja3s"
                buffers[name + ".string"] = text
                buffers[name + ".hash"] = _md5(text)

    def _read(self, flow: Any, to_server: bool, buffers: dict[str, bytes], done: bool) -> bool:
        """After a segment's records are read: the direction ended when ``done``, the
        version its hello gave kept (or added from before)."""
        if done:
            self._set(flow, to_server, _DONE)
        version = buffers.get(TLS_VERSION)
        if version is not None:
            self._keep_version(flow, to_server, version)
        else:
            self.known(flow, to_server, buffers)
        return done

    def _records(
        self,
        ts: float,
        state: _Direction,
        data: bytes | bytearray,
        to_server: bool,
        buffers: dict[str, bytes],
        errors: Errors,
    ) -> bool:
        """Read the whole records of ``data`` (the direction's stream) from where the last
        read ended; True once the handshake is over."""
        pos = state.read
        while pos + 5 <= len(data):
            kind, major = data[pos], data[pos + 1]
            size = data[pos + 3] << 8 | data[pos + 4]
            if kind != 22 or major != 3:
                if pos == 0:
                    count(errors, "tls.not_handshake")
                return True  # encrypted (or not TLS) from here on
            if pos + 5 + size > len(data):
                break
            state.handshake += data[pos + 5 : pos + 5 + size]
            pos += 5 + size
            if self._messages(ts, state, to_server, buffers, errors):
                return True
        state.read = pos
        if len(data) >= HANDSHAKE_MAX:
            count(errors, "tls.handshake_too_long")
            return True
        return False

    def _messages(
        self,
        ts: float,
        state: _Direction,
        to_server: bool,
        buffers: dict[str, bytes],
        errors: Errors,
    ) -> bool:
        """Take the whole handshake messages held; True once nothing more is wanted (with
        ssl_state: once the handshake turns encrypted)."""
        hs = state.handshake
        pos = 0
        done = False
        wanted = self.wanted
        states = 0
        while pos + 4 <= len(hs):
            size = int.from_bytes(hs[pos + 1 : pos + 4], "big")
            if pos + 4 + size > len(hs):
                break
            kind = hs[pos]
            body = bytes(hs[pos + 4 : pos + 4 + size])
            pos += 4 + size
            states |= _STATE_OF.get(kind, 0 if kind in _KNOWN_MESSAGES else SSL_STATES["unknown"])
            if kind == 1 or kind == 2:  # a hello
                # its JA3 (or JA3S) from the side that sends it, its version from either
                own = to_server == (kind == 1)
                self._hello(body, kind == 1, own, buffers)
                if own and (kind == 1 or not wanted & CERT_BUFFERS):
                    done = True
            elif not to_server and kind == 11:  # Certificate
                buffers.update(cert_buffers(certificates(body), wanted, ts, errors))
                done = True
            elif not to_server and kind in (12, 13, 14):  # after the certificate
                done = True
        del hs[:pos]
        if TLS_STATE in wanted:  # every message of the handshake counts
            if states:
                buffers[TLS_STATE] = bytes((states,))
            return False
        return done


def _whole_hello(payload: bytes) -> bool:
    """Whether a segment is one handshake record holding one whole ClientHello and nothing
    else (the usual first segment of a client): ``_records`` and ``_messages`` would read
    that hello, and be done."""
    size = len(payload)
    return (
        9 <= size < HANDSHAKE_MAX
        and payload[0] == 22
        and payload[1] == 3
        and payload[5] == 1
        and (payload[3] << 8 | payload[4]) == size - 5
        and (payload[6] << 16 | payload[7] << 8 | payload[8]) == size - 9
    )


def _md5(text: bytes) -> bytes:
    return hashlib.md5(text, usedforsecurity=False).hexdigest().encode()
