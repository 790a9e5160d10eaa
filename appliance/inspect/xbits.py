"""``xbits`` state, with Suricata's semantics: bits kept per host (``track ip_src``,
``track ip_dst``) or per pair of addresses (``track ip_pair``, either order), each until its
expiry (``expire N`` seconds after it was set, 30 by default).

A host's bits are one space whichever way they are tracked: a bit set with ``track ip_dst``
on a request is seen by ``isset`` with ``track ip_src`` on the answer. State is bounded in
time (a bit past its expiry counts as unset and is dropped when next looked at) and in count:
past ``max_entries`` bits, the least recently set are forgotten.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

EXPIRE_DEFAULT = 30
COMMANDS = frozenset(("set", "unset", "isset", "isnotset", "toggle"))
TRACKS = frozenset(("ip_src", "ip_dst", "ip_pair"))

# (command, name, track, expire in seconds)
Xbit = tuple[str, str, str, int]


def _key(name: str, track: str, src: bytes, dst: bytes) -> tuple[str, bytes, bytes]:
    if track == "ip_src":
        return (name, src, b"")
    if track == "ip_dst":
        return (name, dst, b"")
    return (name, src, dst) if src <= dst else (name, dst, src)


class XbitState:
    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        # the expiry time of each bit that is set
        self._bits: OrderedDict[tuple[str, bytes, bytes], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._bits)

    def _isset(self, key: tuple[str, bytes, bytes], ts: float) -> bool:
        expiry = self._bits.get(key)
        if expiry is None:
            return False
        if expiry <= ts:
            del self._bits[key]
            return False
        return True

    def hold(self, xbits: Sequence[Xbit], src: bytes, dst: bytes, ts: float) -> bool:
        """Whether a rule's ``isset`` / ``isnotset`` conditions hold for this packet."""
        for command, name, track, _ in xbits:
            if command not in ("isset", "isnotset"):
                continue
            if self._isset(_key(name, track, src, dst), ts) != (command == "isset"):
                return False
        return True

    def apply(self, xbits: Sequence[Xbit], src: bytes, dst: bytes, ts: float) -> None:
        """A matching rule's ``set`` / ``unset`` / ``toggle`` actions."""
        bits = self._bits
        for command, name, track, expire in xbits:
            key = _key(name, track, src, dst)
            if command == "set" or (command == "toggle" and not self._isset(key, ts)):
                bits[key] = ts + expire
                bits.move_to_end(key)
                while len(bits) > self.max_entries:
                    bits.popitem(last=False)
            elif command == "unset" or command == "toggle":
                bits.pop(key, None)


def parse_xbits(value: str) -> Xbit | None:
    """``cmd,name,track T[,expire N]`` as an xbit; ``noalert`` as None. Raises ValueError
    with the message to show."""
    parts = [p.strip() for p in value.split(",")]
    command = parts[0]
    if command == "noalert" and len(parts) == 1:
        return None
    if command not in COMMANDS:
        raise ValueError(f"xbits: unknown command {command!r}")
    if len(parts) < 3 or not parts[1]:
        raise ValueError(f"xbits: {command} needs a name and a track")
    name = parts[1]
    if any(c in name for c in "|& "):
        raise ValueError(f"xbits: {name!r} is not one name")
    track = ""
    expire = EXPIRE_DEFAULT
    for part in parts[2:]:
        word, _, arg = part.partition(" ")
        arg = arg.strip()
        if word == "track":
            if arg not in TRACKS:
                raise ValueError(f"xbits: track {arg!r} is not ip_src, ip_dst or ip_pair")
            track = arg
        elif word == "expire":
            if not arg.isdigit() or int(arg) == 0:
                raise ValueError(f"xbits: expire {arg!r} is not a number of seconds above 0")
            expire = int(arg)
        else:
            raise ValueError(f"xbits: unknown option {part!r}")
    if not track:
        raise ValueError(f"xbits: {command} needs a track")
    return (command, name, track, expire)
