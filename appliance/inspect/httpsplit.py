"""HTTP/1 messages split across TCP segments, inspected as one buffer.

A request (or response) whose head, or whose body as its Content-Length announces, does not
end in the segment that starts it is gathered from the next segments of its direction, in
order, up to ``HTTP_MAX_BYTES``. It is inspected again, whole, when its head is complete
and again when its body is: ``http.uri``, ``http.header``, ``http.request_body``,
``file.data`` and the others are then the whole message's, as Suricata presents them. A rule
alerts once per message. Past the bound the message is inspected as it is
(``http.truncated``); a missing segment ends it too (``http.gap``); at most
``HTTP_MAX_FLOWS`` messages and ``HTTP_MAX_HELD`` bytes are gathered at once (the oldest go
first, ``http.evicted``).
A chunked body is gathered up to its last chunk and its trailer, and the body buffers see
it de-chunked (``appproto.dechunk``), within the same bounds.
The request a segment completes is kept for its alerts (``completed``): their EVE ``http``
object is the whole request's, as for a request in one segment.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Set as AbstractSet
from typing import Any

from appliance.inspect import appproto
from appliance.inspect.appproto import HttpRequest
from appliance.inspect.decode import Errors, Layer, count
from appliance.inspect.rules import Signature

HTTP_MAX_BYTES = 64 * 1024  # bytes of one message gathered at most (head and body)
HTTP_MAX_FLOWS = 1024  # messages gathered at once
HTTP_MAX_HELD = 8 << 20  # bytes of all messages gathered at once
_MOD = 1 << 32
_BODIES = frozenset({"http.request_body", "http.response_body", "file.data"})
# a client's first segment this short that begins a method may begin a request
_METHOD_STARTS = tuple(m + b" " for m in appproto.HTTP_METHODS)
_SHORT_START = max(len(m) for m in _METHOD_STARTS)


class _Message:
    __slots__ = ("data", "flow", "head_done", "maybe", "next_seq", "reported", "size")

    def __init__(self, flow: Any, data: bytes, next_seq: int, size: int) -> None:
        self.flow = flow
        self.data = bytearray(data[:HTTP_MAX_BYTES])
        self.next_seq = next_seq
        self.size = size  # the message's bytes (-1: its head is not complete yet)
        self.head_done = size >= 0
        self.reported: set[int] = set()  # sids that alerted on this message
        self.maybe = False  # the first bytes of a method: a request, if more of it follows


class HttpSplit:
    def __init__(self, wanted: AbstractSet[str]) -> None:
        self.wanted = frozenset(wanted)  # header and body buffers some rule reads
        # bodies are waited for only when a rule reads one
        self.bodies = bool(self.wanted & _BODIES)
        self.lines = self.wanted & appproto.START_BUFFERS
        self.pending: OrderedDict[tuple[bytes, bool], _Message] = OrderedDict()
        self.held = 0  # bytes of the messages in ``pending``
        # the message whose alerts are being decided on this packet: (flow, direction, it)
        self._current: tuple[Any, bool, _Message] | None = None
        # the request this packet's segment completed (its head, or all of it): (flow, it)
        self._request: tuple[Any, HttpRequest] | None = None

    def segment(
        self,
        flow: Any,
        to_server: bool,
        layer: Layer,
        buffers: dict[str, bytes],
        errors: Errors,
    ) -> None:
        """Take a segment of an HTTP flow: a message that starts here and does not end here
        is kept; a segment that continues a kept one adds to it, and fills ``buffers`` with
        the whole message's when its head or its body is complete."""
        self._current = None
        self._request = None
        key = (flow.key, to_server)
        payload = layer.payload
        started = "http.method" in buffers if to_server else "http.stat_code" in buffers
        if started and self.lines:
            buffers.update(appproto.start_buffers(payload, to_server, self.lines))
        message = self.pending.get(key)
        if message is not None and (message.flow is not flow or started):
            self._drop(key)  # a new message (or a new flow): the old one is over
            message = None
        if message is None:
            if not started and to_server and appproto.looks_like_http_request(payload):
                # a request line cut by the segment's end: HTTP from here on
                started = flow.app in ("", "http")
                if started:
                    flow.app = "http"
            elif (
                not started
                and to_server
                and flow.app == ""
                and len(payload) < _SHORT_START
                and any(m.startswith(payload) for m in _METHOD_STARTS)
            ):
                self._start(key, flow, layer, -1, errors)  # a method cut short: wait
                self.pending[key].maybe = True
                return
            if started:
                size = appproto.message_size(payload, self.bodies)
                if size < 0 or size > len(payload):
                    self._start(key, flow, layer, size, errors)
            return
        self._current = (flow, to_server, message)
        behind = (message.next_seq - layer.seq) % _MOD
        if behind >= _MOD // 2:
            count(errors, "http.gap")
            self._finish(key, message, to_server, buffers, errors)
            return
        if behind >= len(payload):
            return  # seen before
        new = payload[behind:]
        message.next_seq = (message.next_seq + len(new)) % _MOD
        data = message.data
        room = HTTP_MAX_BYTES - len(data)
        data += new[:room]
        self.held += min(len(new), room)
        self._bound(key, errors)
        if message.maybe:
            if not appproto.looks_like_http_request(bytes(data[:_SHORT_START])):
                if len(data) >= _SHORT_START or flow.app != "":
                    self._drop(key)  # not HTTP after all
                return
            message.maybe = False
            flow.app = "http"
        if len(new) > room:
            count(errors, "http.truncated")
            self._finish(key, message, to_server, buffers, errors)
            return
        if not message.head_done:
            message.size = appproto.message_size(data, self.bodies)
            if message.size < 0:
                if len(data) >= HTTP_MAX_BYTES:
                    count(errors, "http.truncated")
                    self._finish(key, message, to_server, buffers, errors)
                return
            message.head_done = True
            if len(data) < message.size:
                self._fill(message, to_server, buffers, errors)  # the head is whole
                return
        elif message.size == appproto.CHUNKED_OPEN:  # has the last chunk come?
            message.size = appproto.message_size(data, True)
        if len(data) >= message.size:
            self._finish(key, message, to_server, buffers, errors)

    def completed(self, flow: Any, to_server: bool) -> HttpRequest | None:
        """The request this packet's segment of ``flow`` completed (its head or all of it),
        for the EVE ``http`` object of its alerts; None when it completed none."""
        found = self._request
        if found is None or found[0] is not flow or not to_server:
            return None
        return found[1]

    def once(self, flow: Any, to_server: bool, hits: list[Signature]) -> list[Signature]:
        """The hits that have not alerted on this packet's message yet (rules alert once
        per message); all of them when no message is being gathered."""
        current = self._current
        if current is not None and current[0] is flow and current[1] == to_server:
            message: _Message | None = current[2]
        else:
            message = self.pending.get((flow.key, to_server))
        if message is None or message.flow is not flow:
            return hits
        reported = message.reported
        fresh = [sig for sig in hits if sig.sid not in reported]
        reported.update(sig.sid for sig in hits)
        return fresh

    def _start(
        self, key: tuple[bytes, bool], flow: Any, layer: Layer, size: int, errors: Errors
    ) -> None:
        pending = self.pending
        if len(pending) >= HTTP_MAX_FLOWS:
            self._drop(next(iter(pending)))
            count(errors, "http.evicted")
        payload = layer.payload
        message = pending[key] = _Message(flow, payload, (layer.seq + len(payload)) % _MOD, size)
        self.held += len(message.data)
        self._bound(key, errors)

    def _bound(self, keep: tuple[bytes, bool], errors: Errors) -> None:
        """Past HTTP_MAX_HELD, the messages gathered the longest go (not ``keep``)."""
        pending = self.pending
        while self.held > HTTP_MAX_HELD and len(pending) > 1:
            oldest = next(iter(pending))
            if oldest == keep:
                pending.move_to_end(keep)
                continue
            self._drop(oldest)
            count(errors, "http.evicted")

    def _drop(self, key: tuple[bytes, bool]) -> None:
        message = self.pending.pop(key, None)
        if message is not None:
            self.held -= len(message.data)

    def _finish(
        self,
        key: tuple[bytes, bool],
        message: _Message,
        to_server: bool,
        buffers: dict[str, bytes],
        errors: Errors,
    ) -> None:
        self._drop(key)
        self._fill(message, to_server, buffers, errors)

    def _fill(
        self, message: _Message, to_server: bool, buffers: dict[str, bytes], errors: Errors
    ) -> None:
        data = bytes(message.data)
        if message.size >= 0:
            data = data[: message.size]
        if to_server:
            request = appproto.parse_http_request(data, errors)
            if request is None:
                return
            self._request = (message.flow, request)
            buffers.update(appproto.request_buffers(request, self.wanted))
        else:
            response = appproto.parse_http_response(data)
            if response is None:
                return
            buffers.update(appproto.response_buffers(response, self.wanted))
        if self.lines:
            buffers.update(appproto.start_buffers(data, to_server, self.lines))
