"""Packet decoders: link layer, VLAN, IPv4, IPv6, TCP, UDP, ICMP, SCTP and GTP-U.

Pure functions over bytes. A decoder never raises on bad input: it records the reason in
the ``errors`` counter it is given (``"ipv4.truncated"``, ``"gtp.ext_zero_length"``, ...)
and returns what it could decode, or ``None``. Every loop over a chain (VLAN tags, IPv6
extension headers, GTP extension headers, tunnels) is bounded.
"""

from __future__ import annotations

import struct

from appliance.inspect.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)

Errors = dict[str, int]

MAX_VLAN_DEPTH = 4
MAX_IPV6_EXT = 8
MAX_GTP_EXT = 8
MAX_TUNNEL_DEPTH = 3  # GTP in GTP in GTP: decoded, deeper is an error

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
GTPU_PORT = 2152
VXLAN_PORT = 4789
_VXLAN_PORT = VXLAN_PORT.to_bytes(2, "big")
PROTO_IPIP = 4
PROTO_IPV6_IN_IP = 41
PROTO_GRE = 47
_ETH_BRIDGED = 0x6558  # GRE carrying Ethernet

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = (
    0x01,
    0x02,
    0x04,
    0x08,
    0x10,
    0x20,
    0x40,
    0x80,
)

_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_IPV6_EXT = (0, 43, 60, 135, 139, 140)  # hop-by-hop, routing, dest options, mobility, HIP, shim6
_IPV6_FRAG = 44
_IPV6_AH = 51

_u16 = struct.Struct("!H").unpack_from
_u16x2 = struct.Struct("!HH").unpack_from
_ipv4_head = struct.Struct("!BBHHHBBH4s4s").unpack_from
_ipv6_head = struct.Struct("!IHBB16s16s").unpack_from
_tcp_head = struct.Struct("!HHIIBB").unpack_from
_gtp_head = struct.Struct("!BBHI").unpack_from


def count(errors: Errors, reason: str) -> None:
    errors[reason] = errors.get(reason, 0) + 1


class GtpInfo:
    """A decoded GTP-U v1 header; ``inner`` is the decapsulated packet of a G-PDU."""

    __slots__ = ("error", "inner", "msg_type", "nested", "teid")

    def __init__(self, teid: int, msg_type: int) -> None:
        self.teid = teid
        self.msg_type = msg_type
        self.error: str | None = None
        self.inner: Layer | None = None
        self.nested = False  # the inner packet is itself GTP-U


class Layer:
    """One decoded IP packet (the outer one, or the inner one of a tunnel)."""

    __slots__ = (
        "depth",
        "dport",
        "dst",
        "family",
        "flags",
        "frag",
        "fragment",
        "gtp",
        "icmp_code",
        "icmp_type",
        "ip_at",
        "payload",
        "proto",
        "raw",
        "seq",
        "sport",
        "src",
        "truncated",
        "tunnel",
    )
    # set by the IP decoders only (a reassembled datagram has none): the bytes the packet
    # is in and where its IP header starts in them
    raw: bytes
    ip_at: int

    def __init__(self, family: int, src: bytes, dst: bytes, proto: int, depth: int) -> None:
        self.family = family
        self.src = src
        self.dst = dst
        self.proto = proto
        self.depth = depth
        self.sport = 0
        self.dport = 0
        self.flags = 0  # TCP flags
        self.seq = 0  # TCP sequence number
        self.truncated = False  # the capture cut the packet short (snaplen)
        self.icmp_type = -1
        self.icmp_code = -1
        self.fragment = False
        # a fragment: (identification, offset, more fragments, its part of the IP payload)
        self.frag: tuple[int, int, bool, bytes] | None = None
        self.payload = b""
        self.gtp: GtpInfo | None = None  # set on a GTP-U packet (the outer one)
        self.tunnel: Layer | None = None  # set on an inner packet: its GTP-U carrier


def decode_packet(data: bytes, linktype: int, errors: Errors) -> Layer | None:
    """Decode a captured frame of the given link type down to its IP packet."""
    if linktype == LINKTYPE_ETHERNET:
        if data[12:14] == b"\x08\x00":  # the common case first
            return decode_ipv4(data, 14, len(data), errors, 0)
        return decode_ethernet(data, errors)
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return decode_ip(data, 0, len(data), errors, 0)
    if linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            count(errors, "sll.truncated")
            return None
        return _ethertype(data, 16, _u16(data, 14)[0], errors)
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            count(errors, "sll2.truncated")
            return None
        return _ethertype(data, 20, _u16(data, 0)[0], errors)
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            count(errors, "null.truncated")
            return None
        family = struct.unpack_from("<I" if linktype == LINKTYPE_NULL else "!I", data)[0]
        if family > 0xFFFF:  # written in the other byte order
            family = int.from_bytes(data[:4], "big" if linktype == LINKTYPE_NULL else "little")
        if family == 2 or family in (24, 28, 30):
            return decode_ip(data, 4, len(data), errors, 0)
        count(errors, "null.not_ip")
        return None
    count(errors, "link.unsupported")
    return None


def decode_ethernet(data: bytes, errors: Errors) -> Layer | None:
    if len(data) < 14:
        count(errors, "eth.truncated")
        return None
    return _ethertype(data, 14, _u16(data, 12)[0], errors)


def _ethertype(
    data: bytes, off: int, etype: int, errors: Errors, tunnel_depth: int = 0
) -> Layer | None:
    if etype in (_ETH_IPV4, _ETH_IPV6):
        return decode_ip(data, off, len(data), errors, tunnel_depth)
    depth = 0
    while etype in _ETH_VLAN:
        depth += 1
        if depth > MAX_VLAN_DEPTH:
            count(errors, "vlan.too_deep")
            return None
        if len(data) < off + 4:
            count(errors, "vlan.truncated")
            return None
        etype = _u16(data, off + 2)[0]
        off += 4
    if etype in (_ETH_IPV4, _ETH_IPV6):
        return decode_ip(data, off, len(data), errors, tunnel_depth)
    count(errors, "eth.not_ip")  # ARP, LLDP, ...: not an error of the packet, but not inspected
    return None


def decode_ip(data: bytes, off: int, end: int, errors: Errors, depth: int) -> Layer | None:
    """The IPv4 or IPv6 packet at ``data[off:end]`` and what it carries."""
    if end - off < 1:
        count(errors, "ip.truncated")
        return None
    version = data[off] >> 4
    if version == 4:
        return decode_ipv4(data, off, end, errors, depth)
    if version == 6:
        return decode_ipv6(data, off, end, errors, depth)
    count(errors, "ip.bad_version")
    return None


def decode_ipv4(data: bytes, off: int, end: int, errors: Errors, depth: int) -> Layer | None:
    if end - off < 20:
        count(errors, "ipv4.truncated")
        return None
    vihl, _tos, total, ident, frag, _ttl, proto, _csum, src, dst = _ipv4_head(data, off)
    hlen = (vihl & 0x0F) << 2
    if hlen < 20:
        count(errors, "ipv4.bad_header_length")
        return None
    if total < hlen:
        count(errors, "ipv4.bad_total_length")
        return None
    if off + total <= end:
        end = off + total  # drop Ethernet padding
    else:
        count(errors, "ipv4.truncated_payload")  # a short snaplen: decode what is there
    if off + hlen > end:
        count(errors, "ipv4.truncated")
        return None
    layer = Layer(4, src, dst, proto, depth)
    layer.raw = data
    layer.ip_at = off
    layer.truncated = off + total > end
    if frag & 0x3FFF:  # more fragments, or a fragment offset
        layer.fragment = True
        layer.frag = (ident, (frag & 0x1FFF) << 3, bool(frag & 0x2000), data[off + hlen : end])
        if frag & 0x1FFF:
            layer.payload = data[off + hlen : end]
            return layer  # a later fragment: no transport header in it
    if proto == PROTO_TCP:  # the common case, as _ports_payload decodes it
        off += hlen
        if end - off < 20:
            count(errors, "tcp.truncated")
            return layer
        layer.sport, layer.dport, layer.seq, _ack, doff, flags = _tcp_head(data, off)
        hlen = (doff >> 4) << 2
        if hlen < 20:
            count(errors, "tcp.bad_header_length")
            return layer
        if off + hlen > end:
            count(errors, "tcp.truncated")
            return layer
        layer.flags = flags
        layer.payload = data[off + hlen : end]
        return layer
    return _transport(layer, data, off + hlen, end, errors)


def decode_ipv6(data: bytes, off: int, end: int, errors: Errors, depth: int) -> Layer | None:
    if end - off < 40:
        count(errors, "ipv6.truncated")
        return None
    _vtf, plen, nxt, _hops, src, dst = _ipv6_head(data, off)
    if off + 40 + plen <= end:
        end = off + 40 + plen
    else:
        count(errors, "ipv6.truncated_payload")
    pos = off + 40
    layer = Layer(6, src, dst, nxt, depth)
    layer.raw = data
    layer.ip_at = off
    layer.truncated = off + 40 + plen > end
    for _ in range(MAX_IPV6_EXT + 1):
        if nxt in _IPV6_EXT or nxt == _IPV6_AH:
            if pos + 2 > end:
                count(errors, "ipv6.ext_truncated")
                layer.proto = nxt
                return layer
            size = (data[pos + 1] + 2) * 4 if nxt == _IPV6_AH else (data[pos + 1] + 1) * 8
            if pos + size > end:
                count(errors, "ipv6.ext_truncated")
                layer.proto = nxt
                return layer
            nxt = data[pos]
            pos += size
        elif nxt == _IPV6_FRAG:
            if pos + 8 > end:
                count(errors, "ipv6.ext_truncated")
                layer.proto = nxt
                return layer
            layer.fragment = True
            offset_flags = _u16(data, pos + 2)[0]
            ident = int.from_bytes(data[pos + 4 : pos + 8], "big")
            nxt = data[pos]
            pos += 8
            layer.frag = (ident, offset_flags & 0xFFF8, bool(offset_flags & 1), data[pos:end])
            if offset_flags & 0xFFF8:
                layer.proto = nxt
                layer.payload = data[pos:end]
                return layer
        else:
            layer.proto = nxt
            return _transport(layer, data, pos, end, errors)
    count(errors, "ipv6.ext_too_many")
    layer.proto = nxt
    return layer


def _transport(layer: Layer, data: bytes, off: int, end: int, errors: Errors) -> Layer:
    """The transport header into ``layer``; the packet to inspect: ``layer``, or the inner
    packet of an IP-in-IP, GRE or VXLAN tunnel (its ``tunnel`` the outer one)."""
    proto = layer.proto
    if proto in (PROTO_IPIP, PROTO_IPV6_IN_IP, PROTO_GRE):
        return _tunneled(layer, data, off, end, errors)
    if proto == PROTO_UDP and end - off >= 16 and data[off + 2 : off + 4] == _VXLAN_PORT:
        return _tunneled(layer, data, off, end, errors)
    _ports_payload(layer, data, off, end, errors)
    return layer


def decode_transport(layer: Layer, data: bytes, errors: Errors) -> Layer:
    """A reassembled IP payload's transport header (and tunnel) into ``layer``."""
    return _transport(layer, data, 0, len(data), errors)


def _tunneled(outer: Layer, data: bytes, off: int, end: int, errors: Errors) -> Layer:
    """The inner packet of IP-in-IP (v4 or v6 in v4 or v6), GRE (version 0, carrying IP or
    Ethernet) or VXLAN (UDP 4789); the outer layer when it cannot be decoded (counted)."""
    if outer.depth + 1 > MAX_TUNNEL_DEPTH:
        count(errors, "tunnel.too_deep")
        return outer
    proto = outer.proto
    inner: Layer | None = None
    if proto in (PROTO_IPIP, PROTO_IPV6_IN_IP):
        want = 4 if proto == PROTO_IPIP else 6
        if end - off < 1 or data[off] >> 4 != want:
            count(errors, "ipip.bad_inner")
            return outer
        inner = decode_ip(data, off, end, errors, outer.depth + 1)
    elif proto == PROTO_GRE:
        if end - off < 4:
            count(errors, "gre.truncated")
            return outer
        flags, etype = struct.unpack_from("!HH", data, off)
        if flags & 0x0007:  # version 1 (PPTP) and others: not decoded
            count(errors, "gre.unsupported_version")
            return outer
        pos = off + 4 + 4 * bin(flags & 0xB000).count("1")  # checksum, key, sequence
        if flags & 0x4000:  # routing present (deprecated)
            count(errors, "gre.routing")
            return outer
        if pos > end:
            count(errors, "gre.truncated")
            return outer
        if etype in (_ETH_IPV4, _ETH_IPV6):
            inner = decode_ip(data, pos, end, errors, outer.depth + 1)
        elif etype == _ETH_BRIDGED:
            inner = _inner_ethernet(data[pos:end], errors, outer.depth + 1)
        else:
            count(errors, "gre.unsupported_protocol")
            return outer
    else:  # VXLAN
        outer.sport, outer.dport = struct.unpack_from("!HH", data, off)
        if not data[off + 8] & 0x08:  # the VNI flag
            count(errors, "vxlan.bad_flags")
            _ports_payload(outer, data, off, end, errors)
            return outer
        inner = _inner_ethernet(data[off + 16 : end], errors, outer.depth + 1)
    if inner is None:
        return outer
    if inner.tunnel is None:
        inner.tunnel = outer
    return inner


def _inner_ethernet(frame: bytes, errors: Errors, depth: int) -> Layer | None:
    if len(frame) < 14:
        count(errors, "eth.truncated")
        return None
    return _ethertype(frame, 14, _u16(frame, 12)[0], errors, depth)


def _ports_payload(layer: Layer, data: bytes, off: int, end: int, errors: Errors) -> None:
    proto = layer.proto
    if proto == PROTO_TCP:
        if end - off < 20:
            count(errors, "tcp.truncated")
            return
        layer.sport, layer.dport, layer.seq, _ack, doff, flags = _tcp_head(data, off)
        hlen = (doff >> 4) << 2
        if hlen < 20:
            count(errors, "tcp.bad_header_length")
            return
        if off + hlen > end:
            count(errors, "tcp.truncated")
            return
        layer.flags = flags
        layer.payload = data[off + hlen : end]
    elif proto == PROTO_UDP:
        if end - off < 8:
            count(errors, "udp.truncated")
            return
        layer.sport, layer.dport, ulen = struct.unpack_from("!HHH", data, off)
        if 8 <= ulen <= end - off:
            end = off + ulen
        elif ulen < 8:
            count(errors, "udp.bad_length")
        layer.payload = data[off + 8 : end]
        if layer.dport == GTPU_PORT:
            decode_gtp(layer, data, off + 8, end, errors)
    elif proto in (PROTO_ICMP, PROTO_ICMPV6):
        if end - off < 4:
            count(errors, "icmp.truncated")
            return
        layer.icmp_type = data[off]
        layer.icmp_code = data[off + 1]
        layer.payload = data[off + 8 : end] if end - off >= 8 else b""
    elif proto == PROTO_SCTP:
        if end - off < 12:
            count(errors, "sctp.truncated")
            return
        layer.sport, layer.dport = _u16x2(data, off)
        layer.payload = data[off + 12 : end]
    else:
        layer.payload = data[off:end]


def decode_gtp(layer: Layer, data: bytes, off: int, end: int, errors: Errors) -> GtpInfo | None:
    """GTP-U v1 at ``data[off:end]`` (a UDP payload to port 2152), set on ``layer.gtp``.

    A G-PDU's inner IPv4/IPv6 packet is decoded in turn into ``gtp.inner``; a malformed
    header leaves ``gtp.error`` set (and counted).
    """
    if end - off < 8:
        count(errors, "gtp.truncated")
        info = GtpInfo(0, 0)
        info.error = "gtp.truncated"
        layer.gtp = info
        return info
    flags, msg_type, length, teid = _gtp_head(data, off)
    info = GtpInfo(teid, msg_type)
    layer.gtp = info
    if flags >> 5 != 1 or not flags & 0x10:
        return _gtp_error(info, errors, "gtp.bad_version")
    start = off + 8
    pdu_end = start + length
    if pdu_end > end:
        return _gtp_error(info, errors, "gtp.truncated")
    pos = start
    if flags & 0x07:  # E, S or PN: the optional 4 bytes are present
        if length < 4:
            return _gtp_error(info, errors, "gtp.length_short")
        next_ext = data[pos + 3]
        pos += 4
        if flags & 0x04:
            for _ in range(MAX_GTP_EXT + 1):
                if next_ext == 0:
                    break
                if pos >= pdu_end:
                    return _gtp_error(info, errors, "gtp.ext_truncated")
                units = data[pos]
                if units == 0:
                    return _gtp_error(info, errors, "gtp.ext_zero_length")
                pos += units * 4
                if pos > pdu_end:
                    return _gtp_error(info, errors, "gtp.ext_truncated")
                next_ext = data[pos - 1]
            else:
                return _gtp_error(info, errors, "gtp.ext_too_many")
    if msg_type != 255:
        return info  # echo, error indication, end marker: no user packet
    if pos >= pdu_end:
        return _gtp_error(info, errors, "gtp.empty_pdu")
    if layer.depth + 1 > MAX_TUNNEL_DEPTH:
        return _gtp_error(info, errors, "gtp.too_deep")
    version = data[pos] >> 4
    if version != 4 and version != 6:
        return _gtp_error(info, errors, "gtp.inner_not_ip")
    inner = decode_ip(data, pos, pdu_end, errors, layer.depth + 1)
    if inner is None:
        return _gtp_error(info, errors, "gtp.inner_malformed")
    inner.tunnel = layer
    info.inner = inner
    info.nested = inner.gtp is not None
    return info


def _gtp_error(info: GtpInfo, errors: Errors, reason: str) -> GtpInfo:
    count(errors, reason)
    info.error = reason
    return info
