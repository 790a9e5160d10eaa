"""Community ID v1 (Corelight's flow hash): the same string for both directions of a flow,
so an alert can be joined with other tools' records of it."""

from __future__ import annotations

import base64
import hashlib

# ICMP types that have a counterpart: request and reply hash as one flow
_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {
    128: 129,
    129: 128,
    133: 134,
    134: 133,
    135: 136,
    136: 135,
    130: 131,
    131: 130,
    144: 145,
    145: 144,
}
_PORT_PROTOS = (1, 6, 17, 58, 132)


def community_id(
    src: bytes,
    dst: bytes,
    proto: int,
    sport: int = 0,
    dport: int = 0,
    seed: int = 0,
    icmp_type: int = -1,
    icmp_code: int = -1,
) -> str:
    """``1:`` and the base64 SHA-1 of seed, the ordered addresses and ports and the protocol.
    For ICMP and ICMPv6 the ports are the type and its counterpart (else the code)."""
    one_way = False
    if proto in (1, 58):
        pairs = _ICMP4_PAIRS if proto == 1 else _ICMP6_PAIRS
        sport = icmp_type
        counterpart = pairs.get(icmp_type)
        if counterpart is None:
            dport, one_way = icmp_code, True
        else:
            dport = counterpart
    if not one_way and (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    data = seed.to_bytes(2, "big") + src + dst + bytes((proto, 0))
    if proto in _PORT_PROTOS:
        data += sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()
