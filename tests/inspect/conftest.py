"""Frames these tests build are fed to the engine, never sent: scapy must not look up their
destination MAC on this machine's network (an ARP request or a neighbour solicitation per
frame for an address on a local link, then a 2 s wait for an answer that never comes). Each
frame gets a fixed, locally administered destination MAC instead."""

from __future__ import annotations

from scapy.config import conf
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet

BUILT_DESTINATION_MAC = "02:00:00:00:00:01"


def _no_lookup(l2: Packet, l3: Packet) -> str:
    return BUILT_DESTINATION_MAC


conf.neighbor.register_l3(Ether, IP, _no_lookup)
conf.neighbor.register_l3(Ether, IPv6, _no_lookup)
