"""The compiled ``hello_fields`` (a TLS hello's JA3 / JA3S and version) against its twin,
``tlsinfo.hello_fields``: the same answer for every body, well-formed, cut short, its
lengths off, its bytes damaged."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.inspect import core
from appliance.inspect.decode import decode_packet
from appliance.inspect.tlsinfo import hello_fields
from appliance.lab.mix import Mix

from .test_core import MORE, mutated
from .test_tlsinfo import server_hello
from .test_tlsinfo_versions import TLS13_SERVER
from .traffic import client_hello

pytestmark = pytest.mark.skipif(
    not core.available() or core.switched_off(),
    reason="the compiled fast path is not built (setup.py) or is switched off",
)

ASKED = ((True, True), (True, False), (False, True), (False, False))


def hellos_alike(bodies: list[bytes]) -> int:
    """Each body read as a client's and as a server's hello, with each of the two fields
    asked or not: the compiled reader answers as the twin; how many bodies gave a JA3."""
    compiled = core.hello_fields_function()
    assert compiled is not None
    read = 0
    for body in bodies:
        for client in (True, False):
            for ja3, version in ASKED:
                want = hello_fields(body, client, ja3, version)
                assert compiled(body, client, ja3, version) == want, (body.hex(), client)
                read += client and ja3 and want[0] is not None
    return read


def mix_hellos() -> list[bytes]:
    """The bodies of the ClientHellos and ServerHellos of the benchmark's mix (its TLS flows
    carrying the server's records too)."""
    bodies = []
    for _ts, data, _lt in Mix(seed=5, records=True).build(6_000):
        layer = decode_packet(data, 1, {})
        payload = layer.payload if layer is not None else b""
        if payload[:1] == b"\x16" and payload[5:6] in (b"\x01", b"\x02"):
            bodies.append(bytes(payload[9 : 9 + int.from_bytes(payload[6:9], "big")]))
    return bodies


def test_the_mix_s_hellos_and_their_mutations() -> None:
    bodies = mix_hellos()
    assert len(bodies) > 40
    assert hellos_alike(bodies) >= len(bodies) // 2
    rng = random.Random(3)
    for _ in range(8):
        hellos_alike(mutated(bodies, rng, (0, 1, 2, 0x0A, 0x2B, 0xFF)))


def test_known_strings_and_versions() -> None:
    compiled = core.hello_fields_function()
    assert compiled is not None
    body = client_hello("a.example")[9:]
    text, version = compiled(body, True, True, True)
    assert (text, version) == (hello_fields(body, True, True, True))
    assert text is not None and text.startswith(b"771,") and version == 0x0303
    assert compiled(server_hello()[4:], False, True, True) == (b"771,49199,65281-11", 0x0303)
    assert compiled(server_hello(TLS13_SERVER)[4:], False, False, True) == (None, 0x0304)
    # every prefix of a hello: as far as each field goes
    hellos_alike([body[:cut] for cut in range(len(body) + 1)])
    hellos_alike([server_hello()[4:][:cut] for cut in range(60)])
    with pytest.raises(TypeError):
        compiled(bytearray(body), True, True, True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compiled(body, True, True)  # type: ignore[call-arg]


def _u16s(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


GREASE = st.sampled_from([0x0A0A, 0x1A1A, 0xFAFA, 0x0A1A])
VALUE = st.one_of(st.integers(0, 0xFFFF), GREASE, st.sampled_from([0x0304, 0x7F1C, 0x0303]))


@settings(max_examples=400 * MORE, deadline=None)
@given(
    st.integers(0, 40),
    st.lists(VALUE, max_size=12),
    st.lists(
        st.tuples(
            st.one_of(VALUE, st.sampled_from([10, 11, 43, 0])),
            st.lists(VALUE, max_size=6),
            st.integers(-3, 3),
        ),
        max_size=6,
    ),
    st.tuples(st.integers(-3, 3), st.integers(-3, 3)),
    st.booleans(),
)
def test_random_hellos(
    session: int,
    suites: list[int],
    extensions: list[tuple[int, list[int], int]],
    skew: tuple[int, int],
    odd: bool,
) -> None:
    """Hellos with GREASE values, supported groups, point formats and supported versions,
    repeated extensions, lengths a little off and lists of an odd byte count: both readers
    agree, as a client's and as a server's hello."""
    listed = b""
    for etype, values, off in extensions:
        data = _u16s(values)
        inner = max(0, len(data) + off)
        if etype == 43:
            data = bytes((min(255, inner),)) + data  # a client's list: one byte of length
        elif etype == 11:
            data = bytes((min(255, inner),)) + bytes(v & 0xFF for v in values)
        else:
            data = inner.to_bytes(2, "big") + data
        listed += etype.to_bytes(2, "big") + (len(data) + (1 if odd else 0)).to_bytes(2, "big")
        listed += data
    ciphers = _u16s(suites) + (b"\x07" if odd else b"")
    body = (
        b"\x03\x03"
        + b"r" * 32
        + bytes((session,))
        + b"s" * session
        + max(0, len(ciphers) + skew[0]).to_bytes(2, "big")
        + ciphers
        + b"\x01\x00"
        + max(0, len(listed) + skew[1]).to_bytes(2, "big")
        + listed
    )
    hellos_alike([body, body[: len(body) // 2], body[:-1]])
