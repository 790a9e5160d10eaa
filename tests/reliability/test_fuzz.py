"""Fuzzing of every parser that reads untrusted input: the profile parser (documents and
text), the signature-rule parser, the bundle parser and its signature file, the control
protocol, and each decoder. Each input is refused with the parser's own one-line error or
accepted; no other exception, no hang.

By default each target runs a short seeded (derandomized) hypothesis run; with
APPLIANCE_SOAK=1 each runs random seeds for APPLIANCE_FUZZ_SECONDS (default 600). What a
run finds becomes a plain test of its own beside the parser's tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from appliance.daemon.control import ControlServer
from appliance.errors import ApplianceError, ProfileError, RuleFileError
from appliance.inspect import appproto
from appliance.inspect.decode import Errors, decode_packet
from appliance.inspect.rules import Variables, parse_rules
from appliance.model.parse import load_profile, parse_profile
from appliance.sync import bundle as B
from appliance.sync import keys
from tests.conftest import REPO, small_profile
from tests.inspect.test_robustness import udp4
from tests.reliability.conftest import SOAK, fuzz_seconds

EXAMPLES = 150  # per target in the default run
RULES_TEXT = (REPO / "profiles" / "rules" / "edge.rules").read_text()
PROFILE_TEXT = (
    small_profile("fuzz", ["203.0.113.0/24", "198.51.100.1"])
    + """
[[rules]]
name = "web"
from = "lan"
to = "self"
proto = "tcp"
dport = [80, "8000-8080"]
action = "accept"
[defaults]
input = "drop"
"""
)
PROFILE_DOC = tomllib.loads(PROFILE_TEXT)
VARIABLES = Variables.from_networks(None)
KEY = keys.generate()


def fuzz(strategy: st.SearchStrategy[Any]) -> Callable[[Callable[[Any], None]], Callable[[], None]]:
    """Run ``check`` on inputs drawn from ``strategy``: seeded and short by default, random
    seeds for the soak's time budget with APPLIANCE_SOAK=1."""

    def wrap(check: Callable[[Any], None]) -> Callable[[], None]:
        def run() -> None:
            base = settings(
                max_examples=EXAMPLES,
                deadline=None if SOAK else 2000,
                derandomize=not SOAK,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            if not SOAK:
                settings(base)(given(strategy)(check))()
                return
            budget = time.monotonic() + fuzz_seconds()
            round_ = 0
            while time.monotonic() < budget:
                round_ += 1
                seeded = seed(round_)(given(strategy)(check))
                settings(base, max_examples=2000, derandomize=False)(seeded)()

        run.__name__ = check.__name__
        return run

    return wrap


# ---- mutation of a valid input ----------------------------------------------------------

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "any",
            "self",
            "lan",
            "@blocklist",
            "@nope",
            "0.0.0.0/0",
            "::/0",
            "10.0.0.1-10.0.0.0",
            "65536",
            "1-0",
            "eth1",
            "*",
            "../x",
            "a" * 300,
        ]
    ),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, (*prefix, index))
    return found


def _mutated(doc: dict[str, Any], edits: list[tuple[int, Any, bool]]) -> dict[str, Any]:
    """``doc`` with values replaced (or keys removed) at paths picked by index."""
    copy: dict[str, Any] = json.loads(json.dumps(doc))
    for pick, value, remove in edits:
        paths = _paths(copy)
        if not paths:
            break
        path = paths[pick % len(paths)]
        parent: Any = copy
        for step in path[:-1]:
            parent = parent[step]
        if remove and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return copy


EDITS = st.lists(st.tuples(st.integers(0, 10_000), VALUES, st.booleans()), min_size=1, max_size=4)


def _text_mutated(text: str, edits: list[tuple[int, int, str]]) -> str:
    for at, cut, insert in edits:
        at %= len(text) + 1
        text = text[:at] + insert + text[at + cut :]
    return text


TEXT_EDITS = st.lists(
    st.tuples(st.integers(0, 1_000_000), st.integers(0, 8), st.text(max_size=12)),
    min_size=1,
    max_size=6,
)


def _one_line(exc: Exception) -> None:
    message = str(exc)
    assert message and "\n" not in message, repr(message)
    assert "Traceback" not in message


# ---- targets ------------------------------------------------------------------------------


@fuzz(EDITS)
def test_profile_documents(edits: list[tuple[int, Any, bool]]) -> None:
    try:
        parse_profile(_mutated(PROFILE_DOC, edits), "<fuzz>", Path("/nonexistent"))
    except ProfileError as exc:
        _one_line(exc)


PROFILE_FILE = Path(tempfile.gettempdir()) / f"appliance-fuzz-{os.getpid()}.toml"


@pytest.fixture(scope="module", autouse=True)
def _remove_profile_file() -> Iterator[None]:
    yield
    PROFILE_FILE.unlink(missing_ok=True)


@fuzz(TEXT_EDITS)
def test_profile_text(edits: list[tuple[int, int, str]]) -> None:
    PROFILE_FILE.write_text(_text_mutated(PROFILE_TEXT, edits))
    try:
        load_profile(PROFILE_FILE)
    except ProfileError as exc:
        _one_line(exc)


@fuzz(st.tuples(st.integers(0, 10_000), TEXT_EDITS))
def test_signature_rules(case: tuple[int, list[tuple[int, int, str]]]) -> None:
    pick, edits = case
    rules = [line for line in RULES_TEXT.splitlines() if line.startswith("alert")]
    text = _text_mutated(rules[pick % len(rules)], edits)
    try:
        list(parse_rules(text, "fuzz.rules", VARIABLES))
    except RuleFileError as exc:
        _one_line(exc)


BUNDLE = B.build_bundle(
    json.loads(json.dumps(PROFILE_DOC)), {"blocklist": ["192.0.2.0/25"]}, 7, 4e9, Path("/")
)
SIGNATURE = B.sign_text("", KEY, BUNDLE)


@fuzz(st.tuples(EDITS, TEXT_EDITS, st.booleans()))
def test_bundles(
    case: tuple[list[tuple[int, Any, bool]], list[tuple[int, int, str]], bool],
) -> None:
    edits, byte_edits, as_text = case
    if as_text:
        data = _text_mutated(BUNDLE.decode(), byte_edits).encode(errors="surrogatepass")
    else:
        data = json.dumps(_mutated(json.loads(BUNDLE), edits)).encode()
    try:
        B.parse_bundle(data, Path("/"))
    except (B.BundleError, ApplianceError) as exc:
        _one_line(exc)


@fuzz(TEXT_EDITS)
def test_signature_files(edits: list[tuple[int, int, str]]) -> None:
    sig = _text_mutated(SIGNATURE, edits).encode(errors="surrogatepass")
    try:
        B.check_signature(BUNDLE, sig, [KEY.public])
    except (B.BundleError, ApplianceError) as exc:
        _one_line(exc)


async def _echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "op": request["op"]}


@fuzz(st.one_of(st.binary(max_size=300), VALUES.map(lambda v: json.dumps(v).encode())))
def test_control_protocol(line: bytes) -> None:
    answer = asyncio.run(ControlServer(_echo)._answer(line))
    assert isinstance(answer["ok"], bool)
    if not answer["ok"]:
        assert answer["exit"] == 2
        _one_line(Exception(answer["error"]))


FRAMES = [udp4(b"\x30\xff\x00\x08\x00\x00\x00\x01" + b"E" * 28), udp4(b"x" * 40, dport=53)]


@fuzz(
    st.tuples(
        st.sampled_from([1, 101, 113, 276]),
        st.integers(0, 1),
        st.integers(0, 200),
        st.binary(max_size=200),
    )
)
def test_packet_decoder(case: tuple[int, int, int, bytes]) -> None:
    linktype, which, cut, tail = case
    errors: Errors = {}
    decode_packet(FRAMES[which][:cut] + tail, linktype, errors)
    assert all(isinstance(v, int) and v > 0 for v in errors.values())


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;ext=1\r\nMZ-S\r\n8\r\nPLIT-EXE\r\n0\r\nX-Trailer: 1\r\n\r\n"
)


@fuzz(st.tuples(st.integers(0, len(CHUNKED)), st.binary(max_size=200), st.binary(max_size=40)))
def test_chunked_bodies(case: tuple[int, bytes, bytes]) -> None:
    """A chunked response cut anywhere and continued by any bytes: its size is known,
    still open or the head incomplete, and de-chunking gives at most what came."""
    cut, tail, head_junk = case
    data = CHUNKED[:cut] + tail
    size = appproto.message_size(data)
    assert size == -1 or size == appproto.CHUNKED_OPEN or 0 < size <= len(data)
    body = data[data.find(b"\r\n\r\n") + 4 :] if b"\r\n\r\n" in data else tail
    assert len(appproto.dechunk(body)) <= len(body)
    response = appproto.parse_http_response(head_junk + data)
    if response is not None:
        assert len(response.body) <= len(response.raw_body)


@fuzz(st.binary(max_size=600))
def test_application_decoders(payload: bytes) -> None:
    errors: Errors = {}
    appproto.parse_dns(payload, errors)
    appproto.parse_dns(payload, errors, tcp=True)
    appproto.parse_tls_sni(payload, errors)
    appproto.parse_http_request(payload, errors)
    appproto.parse_http_response(payload)
    assert all(isinstance(v, int) and v > 0 for v in errors.values())
