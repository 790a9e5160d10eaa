from collections import OrderedDict
from collections.abc import Callable
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
    def take(self, ts: float, data: bytes) -> bool | bytes: ...
    def lookup(self, layer: Any, ts: float) -> tuple[Any, bool]: ...

class Decoder:
    def __init__(self, layer_type: type, fallback: Callable[..., Any]) -> None: ...
    def decode(self, data: bytes, linktype: int, errors: dict[str, int]) -> Any: ...
