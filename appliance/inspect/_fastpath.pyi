from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

class FastPath:
    def __init__(
        self,
        index: dict[bytes, Any],
        flows: OrderedDict[bytes, Any],
        idle_timeout: float,
        flow_type: type,
        anchored_hit: Callable[..., bool],
        layer_type: type,
        lookup: Callable[[Any, float], tuple[Any, bool]],
    ) -> None: ...
    def take(self, ts: float, data: bytes) -> bool | bytes | Sequence[Any]: ...
    def process(self, ts: float, data: bytes, linktype: int) -> Sequence[Any]: ...
    def full_path(self, full: Callable[[float, bytes, int], Sequence[Any]]) -> None: ...
    def flush_stats(self) -> None: ...
    def header_bits(
        self, src: bytes, dst: bytes, sport: int, dport: int, ports: bool
    ) -> tuple[int, int, int, int]: ...
    def new_flow_path(
        self,
        table: Any,
        stats: Any,
        hellos: dict[bytes, Any],
        plans: dict[tuple[int, ...], int],
        plan_of: Callable[[tuple[int, ...], bytes], int],
        addr: tuple[list[int], list[int]],
        ports: tuple[list[int], list[int]],
        alerting: list[tuple[Any, ...]],
        scan: Callable[[float, bytes, int], Any] | None,
        flood: Callable[[float, bytes, bytes], Any] | None,
        fire: Callable[[float, bytes, bytes, int], Sequence[Any]],
        detected: Callable[..., Sequence[Any]],
        no_alerts: Sequence[Any],
        on: bool,
        made: list[tuple[Any, Any, bool, tuple[Any, ...], int, bool]],
        sizes: bool,
        counters: tuple[Any, Any, Any] | None = None,
        pools: tuple[tuple[int, int], ...] | None = None,
    ) -> None: ...
    def lookup(self, layer: Any, ts: float) -> tuple[Any, bool]: ...
    def scan_path(
        self,
        segment: Callable[..., bool],
        outer: Callable[[Any, bytes, int], bool] | None,
        reassembler: Any,
        stream_type: type,
        head_clear: Callable[[Any, Any, bytes], bool],
        tls_walk: Callable[..., bool] | None = None,
        tls_taken: Callable[[Any], None] | None = None,
        tls_flows: dict[bytes, Any] | None = None,
        tls_shape: tuple[type, type, int] | None = None,
        http: Any = ...,
    ) -> None: ...

class Decoder:
    def __init__(
        self, layer_type: type, fallback: Callable[..., Any], gtp_type: type | None = None
    ) -> None: ...
    def decode(self, data: bytes, linktype: int, errors: dict[str, int]) -> Any: ...

class RuleHits:
    def __init__(
        self,
        icmp_matches: Callable[..., bool],
        head_holds: Callable[..., bool],
        contents_match: Callable[..., bool],
        rule_matches: Callable[..., bool],
        twin: Callable[..., list[Any]],
    ) -> None: ...
    def hits(
        self,
        layer: Any,
        group: Any,
        established: bool,
        flags: int,
        payload: bytes,
        buffers: dict[str, bytes],
    ) -> list[Any]: ...

class DnsParser:
    def __init__(self, query_type: type, fallback: Callable[..., Any], max_name: int) -> None: ...
    def parse(self, payload: bytes, errors: dict[str, int]) -> Any: ...

class SniParser:
    def __init__(self, fallback: Callable[..., bytes | None]) -> None: ...
    def parse(self, payload: bytes, errors: dict[str, int]) -> bytes | None: ...

class HttpParser:
    def __init__(
        self,
        request_type: type,
        normalize_host: Callable[[bytes], bytes],
        methods: tuple[bytes, ...],
        max_headers: int,
        fallback: Callable[..., Any],
    ) -> None: ...
    def parse(self, payload: bytes, errors: dict[str, int]) -> Any: ...

class Patterns:
    def __init__(
        self,
        patterns: Sequence[bytes],
        fold: bool,
        rules: list[Any] | None = None,
        join: Callable[[tuple[int, ...]], Any] | None = None,
        memo: tuple[int, int] | None = None,
    ) -> None: ...
    def scan(
        self, buffer: bytes | bytearray | memoryview, start: int = 0, end: int = ...
    ) -> tuple[int, ...] | None: ...
    def candidates(self, data: bytes) -> Any: ...
    def none_in(self, data: bytes) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def memory(self) -> int: ...
    @property
    def states(self) -> int: ...

def threshold_allow(
    state: Any, sid: int, threshold: Any, src: bytes, dst: bytes, ts: float
) -> bool: ...
def port_scan_syn(detector: Any, ts: float, src: bytes, dport: int) -> Any: ...
def syn_flood_syn(detector: Any, ts: float, src: bytes, dst: bytes) -> Any: ...
def tls_walk(
    shape: tuple[type, type, int],
    followed: dict[bytes, Any],
    flow: Any,
    to_server: bool,
    data: bytes,
    ip: int,
    start: int,
    end: int,
) -> bool | None: ...
def hello_fields(
    body: bytes, client: bool, ja3: bool, version: bool
) -> tuple[bytes | None, int | None]: ...
def anchor_placed(index: Any, text: bytes, skip: set[int] | None) -> list[Any] | None: ...
def head_clear(group: Any, stream: Any, payload: bytes) -> bool | None: ...

ANCHOR_LIMIT: int
