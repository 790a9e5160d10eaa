"""An alert on the segment that completes an HTTP request split across segments carries
the request's EVE ``http`` object, as an alert on a request in one segment does."""

from __future__ import annotations

import pytest

from tests.inspect.test_httpsplit import cut, session
from tests.inspect.traffic import inspect

RULES = (
    'alert http any any -> any any (msg:"split"; flow:to_server; http.header; '
    'content:"X-Late: yes"; sid:1;)\n'
)
REQUEST = (
    b"GET /a/long/path?q=1 HTTP/1.1\r\nHost: App.Example:8080\r\n"
    b"User-Agent: Split/1.0\r\nX-Late: yes\r\n\r\n"
)


@pytest.mark.parametrize("at", [(0,), (30,), (30, 70), (100,)])
def test_http_fields_of_a_split_request(at: tuple[int, ...]) -> None:
    parts = cut(REQUEST, *at) if at != (0,) else [REQUEST]
    events = inspect(session(parts), RULES)
    assert [e["alert"]["signature_id"] for e in events] == [1]
    assert events[0]["http"] == {
        "hostname": "app.example",
        "url": "/a/long/path?q=1",
        "http_method": "GET",
        "http_user_agent": "Split/1.0",
    }
