"""Bundles: deterministic build, signatures and rotation, and every refusal, in order."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sync import bundle as B
from appliance.sync import keys
from tests.sync.conftest import PROFILE_DOC, build, sign

NOW = 1_900_000_000.0
ROOT = Path("/")


def check(
    data: bytes,
    sig: bytes | None,
    trust: list[keys.PublicKey],
    running: B.Bundle | None = None,
    now: float = NOW,
    **kw: object,
) -> B.BundleVerdict:
    return B.verify(data, sig, trust, now, ROOT, running=running, **kw)  # type: ignore[arg-type]


def test_build_is_deterministic_and_canonical() -> None:
    one = build(3, ["192.0.2.1", "198.51.100.0/24", "192.0.2.1"], expires=NOW + 60)
    two = build(3, ["192.0.2.1", "198.51.100.0/24", "192.0.2.1"], expires=NOW + 60)
    assert one == two
    doc = json.loads(one)
    assert list(doc) == ["version", "expires", "profile", "sets"]
    assert doc["expires"] == B.format_time(NOW + 60)
    assert doc["expires"].endswith("Z")
    assert doc["sets"] == {"blocklist": {"full": ["192.0.2.1", "198.51.100.0/24"]}}
    assert one.endswith(b"\n")


def test_build_refuses_unknown_set_and_bad_elements() -> None:
    with pytest.raises(ValueError, match="not a set of the profile"):
        B.build_bundle(PROFILE_DOC, {"nope": ["192.0.2.1"]}, 1, NOW + 60, ROOT)
    with pytest.raises(ValueError, match="blocklist"):
        B.build_bundle(PROFILE_DOC, {"blocklist": ["2001:db8::1"]}, 1, NOW + 60, ROOT)
    with pytest.raises(ValueError, match="version"):
        B.build_bundle(PROFILE_DOC, {}, 0, NOW + 60, ROOT)


def test_build_drops_local_sections() -> None:
    doc = dict(PROFILE_DOC, metrics={"listen": "127.0.0.1:9469"})
    data = B.build_bundle(doc, {}, 1, NOW + 60, ROOT)
    assert "metrics" not in json.loads(data)["profile"]


def test_valid_bundle_applies(key1: keys.PrivateKey) -> None:
    data = build(1, ["192.0.2.0/24"], expires=NOW + 60)
    verdict = check(data, sign(data, key1), [key1.public])
    assert verdict.result == B.APPLIED
    assert verdict.key_id == key1.public.id
    assert verdict.bundle is not None
    assert {k: tuple(v) for k, v in verdict.bundle.elements.items()} == {
        "blocklist": ("192.0.2.0/24",)
    }
    profile = verdict.bundle.effective_profile()
    assert tuple(profile.set("blocklist").elements) == ("192.0.2.0/24",)


def test_key_id_is_sha256_prefix(key1: keys.PrivateKey) -> None:
    import hashlib

    assert key1.public.id == hashlib.sha256(key1.public.raw).digest()[:8].hex()
    assert len(key1.public.raw) == 32


def test_rotation_either_key_verifies(key1: keys.PrivateKey, key2: keys.PrivateKey) -> None:
    data = build(1, expires=NOW + 60)
    both = sign(data, key1, key2)
    assert len(both.decode().splitlines()) == 2
    assert check(data, both, [key1.public]).result == B.APPLIED
    assert check(data, both, [key2.public]).result == B.APPLIED
    assert check(data, both, [key2.public]).key_id == key2.public.id
    # Signing again with the same key replaces its line, never duplicates it.
    again = B.sign_text(both.decode(), key1, data)
    assert len(again.splitlines()) == 2
    assert again.splitlines()[1] == both.decode().splitlines()[1]


def test_one_tampered_byte_is_a_bad_signature(key1: keys.PrivateKey) -> None:
    data = build(1, ["192.0.2.1"], expires=NOW + 60)
    sig = sign(data, key1)
    tampered = data.replace(b"192.0.2.1", b"192.0.2.2")
    assert tampered != data
    assert check(tampered, sig, [key1.public]).result == B.BAD_SIGNATURE
    flipped = bytearray(data)
    flipped[-2] ^= 1
    assert check(bytes(flipped), sig, [key1.public]).result == B.BAD_SIGNATURE


def test_wrong_key_is_a_bad_signature(key1: keys.PrivateKey, key2: keys.PrivateKey) -> None:
    data = build(1, expires=NOW + 60)
    verdict = check(data, sign(data, key2), [key1.public])
    assert verdict.result == B.BAD_SIGNATURE
    assert "trusted" in verdict.reason


def test_forged_line_under_a_trusted_key_id(key1: keys.PrivateKey, key2: keys.PrivateKey) -> None:
    data = build(1, expires=NOW + 60)
    forged = sign(data, key2).decode().replace(key2.public.id, key1.public.id).encode()
    assert check(data, forged, [key1.public]).result == B.BAD_SIGNATURE


@pytest.mark.parametrize("sig", [None, b"", b"\n\n"])
def test_missing_signature(key1: keys.PrivateKey, sig: bytes | None) -> None:
    data = build(1, expires=NOW + 60)
    assert check(data, sig, [key1.public]).result == B.NO_SIGNATURE


def test_garbage_signature_file(key1: keys.PrivateKey) -> None:
    data = build(1, expires=NOW + 60)
    assert check(data, b"not a signature\n", [key1.public]).result == B.BAD_SIGNATURE
    assert check(data, b"\xff\xfe", [key1.public]).result == B.BAD_SIGNATURE
    huge = b"x" * (B.MAX_SIG_BYTES + 1)
    assert check(data, huge, [key1.public]).result == B.TOO_LARGE


def test_signature_is_checked_before_parsing(key1: keys.PrivateKey) -> None:
    # Unsigned garbage is a signature failure, not a parse error: nothing parses it.
    assert check(b"{not json", sign(b"other", key1), [key1.public]).result == B.BAD_SIGNATURE


def test_expired_no_grace(key1: keys.PrivateKey) -> None:
    data = build(1, expires=NOW)
    verdict = check(data, sign(data, key1), [key1.public], now=NOW)
    assert verdict.result == B.EXPIRED
    assert check(data, sign(data, key1), [key1.public], now=NOW - 1).result == B.APPLIED


def _running(key: keys.PrivateKey, version: int, blocklist: list[str]) -> B.Bundle:
    data = build(version, blocklist, expires=NOW + 60)
    verdict = check(data, sign(data, key), [key.public])
    assert verdict.bundle is not None
    return verdict.bundle


def test_rollback_and_same_version(key1: keys.PrivateKey) -> None:
    running = _running(key1, 5, ["192.0.2.1"])
    older = build(4, expires=NOW + 60)
    assert check(older, sign(older, key1), [key1.public], running).result == B.ROLLBACK
    # Same version, same bytes: a no-op.
    same = running.data
    verdict = check(same, sign(same, key1), [key1.public], running)
    assert verdict.result == B.NOT_MODIFIED
    # Same version, other bytes: refused.
    other = build(5, ["192.0.2.2"], expires=NOW + 60)
    verdict = check(other, sign(other, key1), [key1.public], running)
    assert verdict.result == B.ROLLBACK
    assert "other bytes" in verdict.reason
    newer = build(6, expires=NOW + 60)
    assert check(newer, sign(newer, key1), [key1.public], running).result == B.APPLIED


def test_min_version(key1: keys.PrivateKey) -> None:
    data = build(5, expires=NOW + 60)
    sig = sign(data, key1)
    assert check(data, sig, [key1.public], min_version=5).result == B.APPLIED
    assert check(data, sig, [key1.public], min_version=6).result == B.ROLLBACK


def _delta(version: int, base: int, add: list[str], delete: list[str]) -> bytes:
    doc = {
        "version": version,
        "expires": B.format_time(NOW + 60),
        "profile": PROFILE_DOC,
        "sets": {"blocklist": {"base": base, "add": add, "del": delete}},
    }
    return B.encode_document(doc)


def test_delta_on_the_running_base(key1: keys.PrivateKey) -> None:
    running = _running(key1, 5, ["192.0.2.1", "192.0.2.2"])
    data = _delta(6, 5, ["198.51.100.7"], ["192.0.2.1"])
    verdict = check(data, sign(data, key1), [key1.public], running)
    assert verdict.result == B.APPLIED
    assert verdict.bundle is not None
    assert set(verdict.bundle.elements["blocklist"]) == {"192.0.2.2", "198.51.100.7"}
    assert tuple(verdict.bundle.deltas["blocklist"].add) == ("198.51.100.7",)
    resolved = B.parse_bundle(B.encode_document(verdict.bundle.resolved_document()), ROOT)
    assert resolved.elements == verdict.bundle.elements


def test_delta_on_the_wrong_base(key1: keys.PrivateKey) -> None:
    running = _running(key1, 4, ["192.0.2.1"])
    data = _delta(6, 5, ["198.51.100.7"], [])
    verdict = check(data, sign(data, key1), [key1.public], running)
    assert verdict.wrong_base
    assert verdict.result == B.APPLY_FAILED
    assert verdict.bundle is None
    assert "wrong base" in verdict.reason
    nothing = check(data, sign(data, key1), [key1.public], None)
    assert nothing.wrong_base


def test_build_delta_round_trip(key1: keys.PrivateKey) -> None:
    old = _running(key1, 1, ["192.0.2.1", "192.0.2.2"])
    full = build(2, ["192.0.2.2", "192.0.2.3"], expires=NOW + 60)
    delta = B.build_delta(full, old, ROOT)
    doc = json.loads(delta)
    assert doc["sets"]["blocklist"] == {"base": 1, "add": ["192.0.2.3"], "del": ["192.0.2.1"]}
    verdict = check(delta, sign(delta, key1), [key1.public], old)
    assert verdict.bundle is not None
    # adjacent elements of an interval set merged, as the kernel holds them
    assert list(verdict.bundle.elements["blocklist"]) == ["192.0.2.2/31"]


def _doc(**changes: object) -> bytes:
    doc: dict[str, object] = {
        "version": 1,
        "expires": B.format_time(NOW + 60),
        "profile": PROFILE_DOC,
        "sets": {},
    }
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"[1, 2]", "expected a JSON object"),
        (b'{"version": 1, "version": 2}', "duplicate key"),
        (b"\xff", "UTF-8"),
        (b'{"version": NaN}', "NaN"),
        (_doc(version="1"), "version"),
        (_doc(version=True), "version"),
        (_doc(version=0), "version"),
        (_doc(expires="2030-01-01T00:00:00+02:00"), "expires"),
        (_doc(expires="tomorrow"), "expires"),
        (_doc(extra=1), "unknown key"),
        (_doc(profile=[]), "profile"),
        (_doc(profile=dict(PROFILE_DOC, hub={"url": "http://x/", "trust": []})), "profile.hub"),
        (_doc(profile=dict(PROFILE_DOC, metrics={"listen": "0.0.0.0:1"})), "profile.metrics"),
        (_doc(profile=dict(PROFILE_DOC, extends="base.toml")), "profile.extends"),
        (_doc(profile=dict(PROFILE_DOC, defaults={"input": "maybe"})), "defaults.input"),
        (_doc(profile={"version": 1, "name": "x"}), "no policy"),
        (_doc(sets={"nope": {"full": []}}), "not a set"),
        (_doc(sets={"blocklist": {"full": ["2001:db8::1"]}}), "blocklist"),
        (_doc(sets={"blocklist": {"full": [1]}}), "expected a string"),
        (_doc(sets={"blocklist": {"full": [], "add": []}}), "full"),
        (_doc(sets={"blocklist": {"base": 1, "add": [], "del": []}}), "not below"),
    ],
)
def test_malformed_is_refused_with_a_reason(
    key1: keys.PrivateKey, data: bytes, needle: str
) -> None:
    verdict = check(data, sign(data, key1), [key1.public])
    assert verdict.result == B.MALFORMED, verdict
    assert needle in verdict.reason
    assert "\n" not in verdict.reason


def test_size_cap(key1: keys.PrivateKey) -> None:
    data = build(1, expires=NOW + 60)
    verdict = check(data, sign(data, key1), [key1.public], max_bytes=len(data) - 1)
    assert verdict.result == B.TOO_LARGE


def test_set_size_limit_counts_hub_elements(key1: keys.PrivateKey) -> None:
    profile = json.loads(json.dumps(PROFILE_DOC))
    profile["sets"]["blocklist"]["size"] = 2
    data = B.encode_document(
        {
            "version": 1,
            "expires": B.format_time(NOW + 60),
            "profile": profile,
            "sets": {"blocklist": {"full": ["192.0.2.1", "192.0.2.3", "192.0.2.5"]}},
        }
    )
    verdict = check(data, sign(data, key1), [key1.public])
    assert verdict.result == B.MALFORMED
    assert "size" in verdict.reason


def test_times() -> None:
    assert B.parse_time("2030-01-31T12:00:00Z") == B.parse_time("2030-01-31T12:00:00.000Z")
    assert B.format_time(B.parse_time("2030-01-31T12:00:00Z")) == "2030-01-31T12:00:00Z"
    with pytest.raises(ValueError):
        B.parse_time("2030-02-30T00:00:00Z")
    assert B.parse_time(B.format_time(time.time())) <= time.time()


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_is_refused(position: int, bit: int) -> None:
    data = _SIGNED_DATA
    flipped = bytearray(data)
    flipped[position % len(data)] ^= 1 << bit
    verdict = check(bytes(flipped), _SIGNED_SIG, [_SIGNING_KEY.public])
    assert verdict.result == B.BAD_SIGNATURE
    assert verdict.bundle is None


_SIGNING_KEY = keys.generate()
_SIGNED_DATA = build(1, ["192.0.2.1"], expires=NOW + 60)
_SIGNED_SIG = sign(_SIGNED_DATA, _SIGNING_KEY)


def _hosts(count: int, seed: int) -> list[str]:
    import random

    picked = random.Random(seed).sample(range(1 << 24), count)
    return [f"10.{v >> 16}.{(v >> 8) & 255}.{v & 255}" for v in picked]


def test_large_set_is_packed_and_applies_the_same_elements(key1: keys.PrivateKey) -> None:
    from appliance.model.elements import Elements
    from appliance.reconcile.state import desired_with_hub

    texts = [*_hosts(50_000, seed=7), "192.0.2.0/24", "192.0.2.7", "198.51.100.0/25"]
    data = build(3, texts, expires=NOW + 60)
    verdict = check(data, sign(data, key1), [key1.public])
    assert verdict.result == B.APPLIED and verdict.bundle is not None
    held = verdict.bundle.elements["blocklist"]
    assert held.spans is not None  # packed: words, not a text per element
    assert held.nbytes() <= 8 * len(held)
    # the elements the kernel gets are those the texts name, overlaps merged
    expected = Elements.of("ipv4_addr", True, texts)
    assert held == expected
    bundle = verdict.bundle
    desired = desired_with_hub(bundle.profile, bundle.effective_profile())
    assert desired.hub is not None and desired.hub["blocklist"] == expected
    assert not desired.elements["blocklist"]
    # kept as the store keeps it and read again: the same
    again = B.parse_bundle(B.encode_document(bundle.resolved_document()), ROOT)
    assert again.elements == bundle.elements


def test_large_set_tampered_is_refused(key1: keys.PrivateKey) -> None:
    texts = _hosts(20_000, seed=8)
    data = build(3, texts, expires=NOW + 60)
    sig = sign(data, key1)
    victim = texts[12_345].encode()
    at = data.index(b'"' + victim + b'"') + 1
    swapped = b"10.255.255.255"[: len(victim)].ljust(len(victim), b"0")
    tampered = data[:at] + swapped + data[at + len(victim) :]
    assert len(tampered) == len(data) and tampered != data
    verdict = check(tampered, sig, [key1.public])
    assert verdict.result == B.BAD_SIGNATURE and verdict.bundle is None
    # a set array cut short (an element dropped) is refused the same way
    dropped = data.replace(b'"' + victim + b'",', b"", 1)
    assert check(dropped, sig, [key1.public]).result == B.BAD_SIGNATURE


def test_large_set_delta_by_value(key1: keys.PrivateKey) -> None:
    texts = _hosts(20_000, seed=9)
    old = B.parse_bundle(build(1, texts, expires=NOW + 60), ROOT)
    changed = texts[1000:] + _hosts(1_000, seed=10)
    full = build(2, changed, expires=NOW + 60)
    delta = B.build_delta(full, old, ROOT)
    verdict = check(delta, sign(delta, key1), [key1.public], old)
    assert verdict.result == B.APPLIED and verdict.bundle is not None
    assert verdict.bundle.elements == B.parse_bundle(full, ROOT).elements
