"""Signature files: the Suricata rule subset of the product contract, parsed into ``Signature``.

``ACTION PROTO SRC SPORT -> DST DPORT (OPTIONS)``; a line ending in ``\\`` continues on the
next; ``#`` starts a comment line. Every error is a ``RuleFileError`` naming ``FILE:LINE``
(the first line of the rule).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

from appliance.errors import RuleFileError, UsageError
from appliance.inspect.classification import CLASSTYPES, DEFAULT_PRIORITY

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

Action = Literal["alert", "drop", "pass"]
ACTIONS: tuple[Action, ...] = get_args(Action)
AddrKind = Literal["any", "net", "list", "not"]
PortKind = Literal["any", "range", "list", "not"]
ThresholdType = Literal["limit", "threshold", "both"]
Track = Literal["by_src", "by_dst"]
RuleProto = Literal["ip", "tcp", "udp", "icmp", "icmpv6", "sctp", "dns", "tls", "http", "gtp"]
PROTOCOLS: tuple[str, ...] = get_args(RuleProto)
BUFFERS = ("dns.query", "tls.sni", "http.host", "http.uri")
BUFFER_APP = {"dns.query": "dns", "tls.sni": "tls", "http.host": "http", "http.uri": "http"}
PROTO_APP = {"dns": "dns", "tls": "tls", "http": "http", "gtp": "gtp"}
PKT = "pkt"

# Suricata's default variables besides HOME_NET / EXTERNAL_NET
ADDRESS_ALIASES = (
    "HTTP_SERVERS",
    "SMTP_SERVERS",
    "SQL_SERVERS",
    "DNS_SERVERS",
    "TELNET_SERVERS",
    "DC_SERVERS",
)
PORT_VARS: dict[str, str] = {
    "HTTP_PORTS": "[80,8000,8008,8080,8888]",
    "SSH_PORTS": "22",
    "FTP_PORTS": "21",
    "DNS_PORTS": "53",
    "GTP_PORTS": "2152",
    "ORACLE_PORTS": "1521",
    "SHELLCODE_PORTS": "!80",
    "FILE_DATA_PORTS": "[80,8000,8008,8080,8888,110,143]",
}

# Where $HOME_NET falls back to when the profile names no networks at all
DEFAULT_HOME_NET = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")

_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40}
_FLAG_BITS.update({"C": 0x80, "1": 0x80, "2": 0x40})


# ---- header expressions -------------------------------------------------------------------


@dataclass(frozen=True)
class AddrExpr:
    """``any``, networks, ``[a, b]`` lists and ``!x`` negations, evaluated as Suricata does."""

    kind: AddrKind
    net: IPNet | None = None
    items: tuple[AddrExpr, ...] = ()

    def match(self, addr: IPAddr) -> bool:
        kind = self.kind
        if kind == "any":
            return True
        if kind == "net":
            assert self.net is not None
            return addr.version == self.net.version and addr in self.net
        if kind == "not":
            return not self.items[0].match(addr)
        positives = [i for i in self.items if i.kind != "not"]
        if positives and not any(i.match(addr) for i in positives):
            return False
        return not any(i.items[0].match(addr) for i in self.items if i.kind == "not")

    @property
    def is_any(self) -> bool:
        return self.kind == "any"


@dataclass(frozen=True)
class PortExpr:
    kind: PortKind
    low: int = 0
    high: int = 65535
    items: tuple[PortExpr, ...] = ()

    def match(self, port: int) -> bool:
        kind = self.kind
        if kind == "any":
            return True
        if kind == "range":
            return self.low <= port <= self.high
        if kind == "not":
            return not self.items[0].match(port)
        positives = [i for i in self.items if i.kind != "not"]
        if positives and not any(i.match(port) for i in positives):
            return False
        return not any(i.items[0].match(port) for i in self.items if i.kind == "not")

    @property
    def is_any(self) -> bool:
        return self.kind == "any"


ANY_ADDR = AddrExpr("any")
ANY_PORT = PortExpr("any")


# ---- options ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    pattern: bytes
    buffer: str = PKT
    nocase: bool = False
    negated: bool = False
    offset: int = 0
    depth: int | None = None

    def __post_init__(self) -> None:
        # what is searched for: lower case for nocase (then in the lower-cased data)
        object.__setattr__(self, "_needle", self.pattern.lower() if self.nocase else self.pattern)

    def matches(self, data: bytes) -> bool:
        region = data
        if self.offset or self.depth is not None:
            stop = None if self.depth is None else self.offset + self.depth
            region = data[self.offset : stop]
        needle: bytes = self._needle  # type: ignore[attr-defined]
        found = needle in region.lower() if self.nocase else needle in region
        return found != self.negated


@dataclass(frozen=True)
class Flags:
    """``flags``: exact by default; ``+`` all of these and maybe others; ``*`` any of these;
    ``!`` not all of these. ``mask`` clears the flags named after the comma."""

    bits: int
    modifier: str = ""
    mask: int = 0xFF

    def matches(self, packet_flags: int) -> bool:
        if not self.bits and packet_flags:
            return self.modifier == "!"
        flags = packet_flags & self.mask
        if self.modifier == "*":
            return bool(flags & self.bits)
        if self.modifier == "+":
            return flags & self.bits == self.bits
        if self.modifier == "!":
            return flags & self.bits != self.bits
        return flags == self.bits


@dataclass(frozen=True)
class Threshold:
    type: ThresholdType
    track: Track
    count: int
    seconds: int


@dataclass(frozen=True)
class Signature:
    action: Action
    proto: RuleProto
    src: AddrExpr
    sport: PortExpr
    dst: AddrExpr
    dport: PortExpr
    bidirectional: bool
    sid: int
    msg: str
    rev: int = 1
    classtype: str | None = None
    category: str = ""
    priority: int = DEFAULT_PRIORITY
    contents: tuple[Content, ...] = ()
    flow_to_server: bool | None = None
    flow_established: bool | None = None
    flags: Flags | None = None
    threshold: Threshold | None = None
    app: str = ""  # the application protocol the rule needs ("" for none)
    path: str = ""
    line: int = 0
    references: tuple[str, ...] = field(default=(), compare=False)


# ---- parsing ------------------------------------------------------------------------------


@dataclass
class Variables:
    """Rule variables: ``$HOME_NET`` from the profile, ``$EXTERNAL_NET`` its complement."""

    home_net: tuple[IPNet, ...]
    ports: Mapping[str, str] = field(default_factory=lambda: dict(PORT_VARS))

    @classmethod
    def from_networks(cls, networks: Iterable[IPNet] | None) -> Variables:
        nets = tuple(networks or ())
        if not nets:
            nets = tuple(ipaddress.ip_network(n) for n in DEFAULT_HOME_NET)
        return cls(home_net=nets)

    def home(self) -> AddrExpr:
        return AddrExpr("list", items=tuple(AddrExpr("net", n) for n in self.home_net))


def parse_rule_files(paths: Sequence[str], variables: Variables) -> list[Signature]:
    """All signatures of the files, in order; a sid may appear once across them."""
    signatures: list[Signature] = []
    seen: dict[int, Signature] = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read rule file: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            line = text_line_of(path, exc.start)
            raise RuleFileError(path, line, f"not UTF-8 text (byte {exc.start})") from None
        for sig in parse_rules(text, path, variables):
            first = seen.get(sid := sig.sid)
            if first is not None:
                raise RuleFileError(
                    path, sig.line, f"duplicate sid {sid} (first at {first.path}:{first.line})"
                )
            seen[sid] = sig
            signatures.append(sig)
    return signatures


def text_line_of(path: str, offset: int) -> int:
    """The line number of a byte offset in a file."""
    try:
        with open(path, "rb") as handle:
            return handle.read(offset).count(b"\n") + 1
    except OSError:
        return 1


def parse_rules(text: str, path: str, variables: Variables) -> Iterator[Signature]:
    for line_no, rule in _logical_lines(text):
        yield parse_rule(rule, path, line_no, variables)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending:
            if not line or line.startswith("#"):
                continue
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield start, " ".join(pending)
        pending = []
    if pending:
        yield start, " ".join(pending)


def parse_rule(text: str, path: str, line: int, variables: Variables) -> Signature:
    def fail(message: str) -> RuleFileError:
        return RuleFileError(path, line, message)

    open_at = _find_outside_brackets(text, "(")
    if open_at < 0 or not text.rstrip().endswith(")"):
        raise fail("expected 'ACTION PROTO SRC SPORT -> DST DPORT (OPTIONS)'")
    header = _split_header(text[:open_at])
    if len(header) != 7:
        raise fail(
            f"the rule header needs 7 fields (ACTION PROTO SRC SPORT -> DST DPORT), "
            f"got {len(header)}: {text[:open_at].strip()!r}"
        )
    action, proto, src, sport, direction, dst, dport = header
    if action not in ACTIONS:
        raise fail(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise fail(f"unknown protocol {proto!r} (expected one of {', '.join(PROTOCOLS)})")
    if direction not in ("->", "<>"):
        raise fail(f"bad direction {direction!r} (expected -> or <>)")
    try:
        src_expr = parse_address(src, variables)
        dst_expr = parse_address(dst, variables)
        sport_expr = parse_ports(sport, variables)
        dport_expr = parse_ports(dport, variables)
    except ValueError as exc:
        raise fail(str(exc)) from None
    body = text[open_at + 1 : text.rstrip().rfind(")")]
    builder = _Builder(fail)
    for name, value in _split_options(body, fail):
        builder.option(name, value)
    return builder.build(
        action=action,
        proto=proto,
        src=src_expr,
        sport=sport_expr,
        dst=dst_expr,
        dport=dport_expr,
        bidirectional=direction == "<>",
        path=path,
        line=line,
    )


def _find_outside_brackets(text: str, char: str) -> int:
    depth = 0
    for i, c in enumerate(text):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == char and depth == 0:
            return i
    return -1


def _split_header(text: str) -> list[str]:
    fields: list[str] = []
    current = ""
    depth = 0
    for c in text.strip():
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        if c.isspace() and depth <= 0:
            if current:
                fields.append(current)
                current = ""
            continue
        current += c
    if current:
        fields.append(current)
    return fields


def _split_options(
    body: str, fail: type[RuleFileError] | object
) -> Iterator[tuple[str, str | None]]:
    """``name: value;`` pairs; ``;`` inside quotes or after a backslash does not end one."""
    current = ""
    quoted = False
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            current += c + body[i + 1]
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        if c == ";" and not quoted:
            yield _option(current)
            current = ""
        else:
            current += c
        i += 1
    if current.strip():
        raise _call(fail, f"option {current.strip()!r} is not ended by ';'")
    if quoted:
        raise _call(fail, "unterminated quoted string in the options")


def _call(fail: object, message: str) -> RuleFileError:
    assert callable(fail)
    error = fail(message)
    assert isinstance(error, RuleFileError)
    return error


def _option(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition(":")
    return name.strip(), (value.strip() if sep else None)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    out = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_content(value: str) -> tuple[bytes, bool]:
    """A content string (``"GET |20|/"``, ``!"x"``) -> (bytes, negated). ValueError if bad."""
    value = value.strip()
    negated = value.startswith("!")
    if negated:
        value = value[1:].strip()
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ValueError(f"content must be a quoted string, got {value!r}")
    text = value[1:-1]
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "|":
            close = text.find("|", i + 1)
            if close < 0:
                raise ValueError("unterminated |hex| section in content")
            digits = "".join(text[i + 1 : close].split())
            try:
                out += bytes.fromhex(digits)
            except ValueError:
                raise ValueError(f"bad hex in content: |{text[i + 1 : close]}|") from None
            i = close + 1
        elif c == "\\" and i + 1 < len(text):
            out += text[i + 1].encode("utf-8")
            i += 2
        else:
            if c == '"' or c == ";":
                raise ValueError(f"unescaped {c!r} in content")
            out += c.encode("utf-8")
            i += 1
    if not out:
        raise ValueError("empty content")
    return bytes(out), negated


class _Builder:
    def __init__(self, fail: object) -> None:
        self.fail = fail
        self.msg: str | None = None
        self.sid: int | None = None
        self.rev = 1
        self.classtype: str | None = None
        self.priority: int | None = None
        self.contents: list[Content] = []
        self.buffer = PKT
        self.buffers_used: set[str] = set()
        self.flow_to_server: bool | None = None
        self.flow_established: bool | None = None
        self.flags: Flags | None = None
        self.threshold: Threshold | None = None
        self.references: list[str] = []
        self.seen: set[str] = set()

    def error(self, message: str) -> RuleFileError:
        return _call(self.fail, message)

    def option(self, name: str, value: str | None) -> None:
        handler = getattr(self, "_opt_" + name.replace(".", "_"), None)
        if not name or handler is None:
            raise self.error(f"unknown rule option {name!r}")
        single = ("msg", "sid", "rev", "classtype", "flow", "flags", "threshold", "priority")
        if name in single:
            if name in self.seen:
                raise self.error(f"option {name!r} given twice")
            self.seen.add(name)
        handler(name, value)

    def _need(self, name: str, value: str | None) -> str:
        if value is None or not value.strip():
            raise self.error(f"option {name!r} needs a value")
        return value

    def _flag_only(self, name: str, value: str | None) -> None:
        if value is not None:
            raise self.error(f"option {name!r} takes no value")

    def _int(self, name: str, value: str | None, low: int = 0, high: int = 2**32 - 1) -> int:
        text = self._need(name, value).strip()
        try:
            number = int(text)
        except ValueError:
            raise self.error(f"option {name!r}: expected an integer, got {text!r}") from None
        if not low <= number <= high:
            raise self.error(f"option {name!r}: {number} is out of range {low}..{high}")
        return number

    # metadata
    def _opt_msg(self, name: str, value: str | None) -> None:
        self.msg = _unquote(self._need(name, value))

    def _opt_sid(self, name: str, value: str | None) -> None:
        self.sid = self._int(name, value, 1)

    def _opt_rev(self, name: str, value: str | None) -> None:
        self.rev = self._int(name, value, 0)

    def _opt_classtype(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        if text not in CLASSTYPES:
            raise self.error(f"unknown classtype {text!r}")
        self.classtype = text

    def _opt_priority(self, name: str, value: str | None) -> None:
        self.priority = self._int(name, value, 1, 255)

    def _opt_reference(self, name: str, value: str | None) -> None:
        self.references.append(self._need(name, value).strip())

    def _opt_metadata(self, name: str, value: str | None) -> None:
        self._need(name, value)

    # payload
    def _opt_content(self, name: str, value: str | None) -> None:
        try:
            pattern, negated = parse_content(self._need(name, value))
        except ValueError as exc:
            raise self.error(str(exc)) from None
        self.contents.append(Content(pattern, buffer=self.buffer, negated=negated))

    def _last_content(self, name: str) -> Content:
        if not self.contents:
            raise self.error(f"option {name!r} must follow a content")
        return self.contents[-1]

    def _replace_last(self, **changes: object) -> None:
        last = self.contents[-1]
        fields = {
            "pattern": last.pattern,
            "buffer": last.buffer,
            "nocase": last.nocase,
            "negated": last.negated,
            "offset": last.offset,
            "depth": last.depth,
        }
        fields.update(changes)
        self.contents[-1] = Content(**fields)  # type: ignore[arg-type]

    def _opt_nocase(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        self._last_content(name)
        self._replace_last(nocase=True)

    def _opt_depth(self, name: str, value: str | None) -> None:
        last = self._last_content(name)
        depth = self._int(name, value, 1, 65535)
        if depth < len(last.pattern):
            raise self.error(f"depth {depth} is shorter than its content ({len(last.pattern)})")
        self._replace_last(depth=depth)

    def _opt_offset(self, name: str, value: str | None) -> None:
        self._last_content(name)
        self._replace_last(offset=self._int(name, value, 0, 65535))

    def _sticky(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        self.buffer = name
        self.buffers_used.add(name)

    _opt_dns_query = _sticky
    _opt_tls_sni = _sticky
    _opt_http_host = _sticky
    _opt_http_uri = _sticky

    def _opt_pkt_data(self, name: str, value: str | None) -> None:
        self._flag_only(name, value)
        self.buffer = PKT

    # flow and packet
    def _opt_flow(self, name: str, value: str | None) -> None:
        for item in self._need(name, value).split(","):
            word = item.strip()
            if word in ("to_server", "from_client"):
                self._set_direction(True)
            elif word in ("to_client", "from_server"):
                self._set_direction(False)
            elif word == "established":
                self.flow_established = True
            elif word in ("not_established", "stateless"):
                self.flow_established = False if word == "not_established" else None
            else:
                raise self.error(f"unknown flow keyword {word!r}")

    def _set_direction(self, to_server: bool) -> None:
        if self.flow_to_server is not None and self.flow_to_server != to_server:
            raise self.error("flow: to_server and to_client exclude each other")
        self.flow_to_server = to_server

    def _opt_flags(self, name: str, value: str | None) -> None:
        text = self._need(name, value).strip()
        main, _, ignored = text.partition(",")
        modifier = ""
        bits = 0
        named = 0
        for c in main.strip():
            if c in "+*!":
                if modifier:
                    raise self.error("flags: only one modifier (+, * or !) at a time")
                modifier = c
            elif c == "0":
                named += 1
            elif c.upper() in _FLAG_BITS:
                bits |= _FLAG_BITS[c.upper()]
                named += 1
            else:
                raise self.error(f"flags: unknown flag {c!r} in {text!r}")
        if not named:
            raise self.error(f"flags: no flag named in {text!r}")
        mask = 0xFF
        if ignored.strip():
            for c in ignored.strip():
                if c.upper() not in _FLAG_BITS:
                    raise self.error(f"flags: unknown flag {c!r} to ignore in {text!r}")
                mask &= ~_FLAG_BITS[c.upper()]
        self.flags = Flags(bits, modifier, mask)

    def _opt_threshold(self, name: str, value: str | None) -> None:
        parts: dict[str, str] = {}
        for item in self._need(name, value).split(","):
            key, _, val = item.strip().partition(" ")
            if key in parts:
                raise self.error(f"threshold: {key!r} given twice")
            parts[key] = val.strip()
        unknown = set(parts) - {"type", "track", "count", "seconds"}
        if unknown:
            raise self.error(f"threshold: unknown field {sorted(unknown)[0]!r}")
        missing = [k for k in ("type", "track", "count", "seconds") if k not in parts]
        if missing:
            raise self.error(f"threshold: missing {', '.join(missing)}")
        if parts["type"] not in get_args(ThresholdType):
            raise self.error(
                f"threshold: type must be limit, threshold or both, not {parts['type']!r}"
            )
        if parts["track"] not in get_args(Track):
            raise self.error(f"threshold: track must be by_src or by_dst, not {parts['track']!r}")
        self.threshold = Threshold(
            type=cast(ThresholdType, parts["type"]),
            track=cast(Track, parts["track"]),
            count=self._int("threshold count", parts["count"], 1),
            seconds=self._int("threshold seconds", parts["seconds"], 1),
        )

    def build(self, **header: object) -> Signature:
        if self.sid is None:
            raise self.error("the rule has no sid")
        if self.msg is None:
            raise self.error("the rule has no msg")
        proto = str(header["proto"])
        apps = {BUFFER_APP[b] for b in self.buffers_used}
        if proto in PROTO_APP:
            apps.add(PROTO_APP[proto])
        if len(apps) > 1:
            raise self.error(f"the rule mixes protocols: {', '.join(sorted(apps))}")
        app = apps.pop() if apps else ""
        if app == "dns" and proto not in ("ip", "udp", "tcp", "dns"):
            raise self.error(f"dns.query needs a dns, udp, tcp or ip rule, not {proto}")
        if app in ("tls", "http") and proto not in ("ip", "tcp", app):
            raise self.error(f"{app} buffers need a {app} or tcp rule, not {proto}")
        category, priority = "", DEFAULT_PRIORITY
        if self.classtype:
            category, priority = CLASSTYPES[self.classtype]
        if self.priority is not None:
            priority = self.priority
        return Signature(
            sid=self.sid,
            msg=self.msg,
            rev=self.rev,
            classtype=self.classtype,
            category=category,
            priority=priority,
            contents=tuple(self.contents),
            flow_to_server=self.flow_to_server,
            flow_established=self.flow_established,
            flags=self.flags,
            threshold=self.threshold,
            app=app,
            references=tuple(self.references),
            **header,  # type: ignore[arg-type]
        )


# ---- addresses and ports ------------------------------------------------------------------


def parse_address(text: str, variables: Variables, depth: int = 0) -> AddrExpr:
    text = text.strip()
    if depth > 16:
        raise ValueError("address lists nested too deep")
    if not text:
        raise ValueError("empty address")
    if text.startswith("!"):
        inner = parse_address(text[1:], variables, depth + 1)
        if inner.is_any:
            raise ValueError("'!any' matches nothing")
        return AddrExpr("not", items=(inner,))
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"unbalanced brackets in address {text!r}")
        items = tuple(parse_address(p, variables, depth + 1) for p in _split_list(text[1:-1]))
        if not items:
            raise ValueError("empty address list []")
        if any(i.is_any for i in items):
            return ANY_ADDR
        return AddrExpr("list", items=items)
    if text.lower() == "any":
        return ANY_ADDR
    if text.startswith("$"):
        name = text[1:]
        if name == "HOME_NET" or name in ADDRESS_ALIASES:
            return variables.home()
        if name == "EXTERNAL_NET":
            return AddrExpr("not", items=(variables.home(),))
        raise ValueError(f"unknown address variable ${name}")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"bad address {text!r}") from None
    return AddrExpr("net", net=net)


def parse_ports(text: str, variables: Variables, depth: int = 0) -> PortExpr:
    text = text.strip()
    if depth > 16:
        raise ValueError("port lists nested too deep")
    if not text:
        raise ValueError("empty port")
    if text.startswith("!"):
        inner = parse_ports(text[1:], variables, depth + 1)
        if inner.is_any:
            raise ValueError("'!any' matches no port")
        return PortExpr("not", items=(inner,))
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"unbalanced brackets in ports {text!r}")
        items = tuple(parse_ports(p, variables, depth + 1) for p in _split_list(text[1:-1]))
        if not items:
            raise ValueError("empty port list []")
        if any(i.is_any for i in items):
            return ANY_PORT
        return PortExpr("list", items=items)
    if text.lower() == "any":
        return ANY_PORT
    if text.startswith("$"):
        name = text[1:]
        if name not in variables.ports:
            raise ValueError(f"unknown port variable ${name}")
        return parse_ports(variables.ports[name], variables, depth + 1)
    if ":" in text:
        low_text, _, high_text = text.partition(":")
        low = _port(low_text) if low_text.strip() else 0
        high = _port(high_text) if high_text.strip() else 65535
        if low > high:
            raise ValueError(f"bad port range {text!r}: {low} > {high}")
        return PortExpr("range", low, high)
    port = _port(text)
    return PortExpr("range", port, port)


def _port(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"bad port {text.strip()!r}") from None
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} is out of range 0..65535")
    return value


def _split_list(text: str) -> list[str]:
    parts: list[str] = []
    current = ""
    depth = 0
    for c in text:
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += c
    if current.strip() or parts:
        parts.append(current)
    return [p for p in (p.strip() for p in parts) if p] if parts else []
