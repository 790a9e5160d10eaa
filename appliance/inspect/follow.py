"""What the engine follows of a TCP direction beyond one segment, only for the buffers a
loaded rule reads: the TLS handshake (``tlsinfo``), HTTP messages split across segments
(``httpsplit``) and the stream sizes (``stream_size``). An engine whose rules read none of
them has no ``Follow`` and pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

from appliance.inspect.decode import Errors, Layer
from appliance.inspect.httpsplit import HttpSplit
from appliance.inspect.rules import BUFFER_APP, STREAM_SIZE, Signature
from appliance.inspect.stream import StreamSizes
from appliance.inspect.tlsinfo import TLS_BUFFERS, TlsHandshakes

_HTTP_BODY_AND_HEADERS = frozenset(b for b, app in BUFFER_APP.items() if app == "http") - {
    "http.uri",
    "http.raw_uri",
    "http.method",
    "http.host",
    "http.user_agent",
}


class Follow:
    def __init__(self, read: AbstractSet[str]) -> None:
        """``read``: every buffer the loaded rules read."""
        tls = read & TLS_BUFFERS
        self.tls = TlsHandshakes(tls) if tls else None
        http = {b for b in read if BUFFER_APP.get(b) == "http"}
        self.http = HttpSplit(read & _HTTP_BODY_AND_HEADERS) if http else None
        self.sizes = StreamSizes() if STREAM_SIZE in read else None

    @classmethod
    def of(cls, signatures: Any) -> Follow | None:
        """The follower the rules need, or None when they read nothing it follows."""
        read = frozenset(c.buffer for sig in signatures for c in sig.contents)
        if not read & (TLS_BUFFERS | {STREAM_SIZE}) and not any(
            BUFFER_APP.get(b) == "http" for b in read
        ):
            return None
        return cls(read)

    def segment(
        self,
        ts: float,
        flow: Any,
        to_server: bool,
        layer: Layer,
        buffers: dict[str, bytes],
        errors: Errors,
    ) -> bool:
        """Take a TCP segment whose application buffers ``buffers`` holds; add what it
        completes. True when a TLS direction's handshake has just been read (the fast path
        may take its next packets)."""
        if self.sizes is not None:
            buffers[STREAM_SIZE] = self.sizes.update(flow, to_server, layer)
        if not layer.payload:
            return False
        app = flow.app
        if self.http is not None and (app == "http" or (app == "" and to_server)):
            self.http.segment(flow, to_server, layer, buffers, errors)
        elif app == "tls" and self.tls is not None and self.tls.pending(flow, to_server):
            return self.tls.feed(ts, flow, to_server, layer, buffers, errors)
        return False

    def quiet(self, flow: Any, to_server: bool, app: str) -> bool:
        """Whether the fast path may skip this direction's payload (no handshake to read)."""
        return not (app == "tls" and self.tls is not None and self.tls.pending(flow, to_server))

    def once(self, flow: Any, to_server: bool, hits: list[Signature]) -> list[Signature]:
        """The hits that alert: once per HTTP message gathered across segments."""
        if self.http is None or flow.app != "http":
            return hits
        return self.http.once(flow, to_server, hits)
