"""A bundle's set arrays read from its bytes: the same document as the JSON decoder's."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sync import bundle as B
from appliance.sync import setarrays
from tests.sync.conftest import PROFILE_DOC

NOW = 1_900_000_000.0


def decoded(data: bytes) -> Any:
    """The document as :func:`setarrays.split` and the decoder read it together."""
    split = setarrays.split(data)
    assert split is not None
    skeleton, arrays = split
    doc = json.loads(skeleton)
    for (name, key), place in arrays.items():
        assert doc["sets"][name][key] == []
        doc["sets"][name][key] = list(setarrays.texts(data, place))
    return doc


element = st.one_of(
    st.from_regex(r"[0-9a-f.:/\-]{0,20}", fullmatch=True),
    st.text(max_size=6),  # escapes, control and non-ASCII characters: left to the decoder
    st.integers(),
)
elements = st.lists(element, max_size=8)
set_spec = st.one_of(
    st.fixed_dictionaries({"full": elements}),
    st.fixed_dictionaries({"base": st.integers(1, 5), "add": elements, "del": elements}),
    st.dictionaries(st.text(max_size=4), st.one_of(elements, st.integers(), st.none())),
)
documents = st.fixed_dictionaries(
    {
        "version": st.integers(1, 10),
        "profile": st.dictionaries(
            st.text(max_size=5), st.recursive(st.text(max_size=5), st.lists, max_leaves=6)
        ),
        "sets": st.dictionaries(st.text(max_size=6), set_spec, max_size=4),
    }
)


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from([None, 0, 2]), st.booleans())
def test_split_reads_the_document_the_decoder_reads(
    doc: dict[str, Any], indent: int | None, ascii_only: bool
) -> None:
    data = json.dumps(doc, indent=indent, ensure_ascii=ascii_only).encode()
    assert decoded(data) == json.loads(data)


@pytest.mark.parametrize("ascii_only", [True, False])
def test_an_array_whose_later_string_is_not_plain_is_left_whole(ascii_only: bool) -> None:
    """A plain string, then one with a bracket and an escape (or non-ASCII): the array is
    the decoder's, not cut short at the bracket inside the string."""
    doc = {
        "version": 1,
        "profile": {},
        "sets": {"": {"full": ["", "]\u0100"]}, "b": {"full": ["1"]}},
    }
    data = json.dumps(doc, ensure_ascii=ascii_only).encode()
    split = setarrays.split(data)
    assert split is not None
    assert sorted(split[1]) == [("b", "full")]
    assert decoded(data) == doc


def test_only_plain_string_arrays_are_cut_out() -> None:
    data = (
        b'{"profile": {"sets": {"x": {"full": ["a"]}}}, "sets": {"a": {"full": ["1", "2"]},'
        b' "b": {"full": ["\\u0031"]}, "c": {"full": [1]}, "d": {"base": 1, "add": [],'
        b' "del": ["9"]}, "e": ["x"]}}'
    )
    split = setarrays.split(data)
    assert split is not None
    skeleton, arrays = split
    assert sorted(arrays) == [("a", "full"), ("d", "add"), ("d", "del")]
    assert list(setarrays.texts(data, arrays[("a", "full")])) == ["1", "2"]
    doc = json.loads(skeleton)
    assert doc["profile"] == {"sets": {"x": {"full": ["a"]}}}  # not the bundle's sets
    assert doc["sets"]["b"] == {"full": ["1"]} and doc["sets"]["c"] == {"full": [1]}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'{"sets": {"a": {"full": ["1"]}}',  # never closed
        b'{"sets": {"a": {"full": ["1"]}}} x',
        b'{"sets" {"a": {}}}',
        b'{"sets": {"a": {"full": ["1"}}}',
    ],
)
def test_what_is_not_an_object_this_walk_reads_is_left_to_the_decoder(data: bytes) -> None:
    split = setarrays.split(data)
    if split is not None:  # then the decoder refuses the rest as it would the whole
        with pytest.raises(ValueError):
            json.loads(split[0])
    with pytest.raises(ValueError):
        json.loads(data)


def test_a_document_not_an_object_is_left_whole() -> None:
    assert setarrays.split(b"[]") is None
    assert setarrays.split(b'"sets"') is None


def test_malformed_around_a_plain_array_is_refused_as_before() -> None:
    for data in (
        b'{"sets": {"a": {"full": ["1"], "full": ["2"]}}}',
        b'{"sets": {"a": {"full": ["1"]}}, "sets": {}}',
        b'{"sets": {"a": {"full": ["1"] "x": 1}}}',
    ):
        split = setarrays.split(data)
        with pytest.raises(ValueError):
            B.decode_json(split[0] if split is not None else data)


def _bundle(hosts: list[str], spacing: str = "") -> bytes:
    doc = {
        "version": 1,
        "expires": B.format_time(NOW + 60),
        "profile": PROFILE_DOC,
        "sets": {"blocklist": {"full": hosts}},
    }
    separators = ("," + spacing, ":" + spacing)
    return json.dumps(doc, separators=separators).encode()


def test_a_bundle_parsed_from_its_set_arrays_equals_the_decoded_one() -> None:
    rng = random.Random(7)
    hosts = [
        f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(3000)
    ]
    hosts += ["192.0.2.0/24", "198.51.100.7"]
    data = _bundle(hosts, " ")
    streamed = B.parse_bundle(data, Path("/"))
    escaped = data.replace(b'"198.51.100.7"', b'"198.51.100.\\u0037"')  # left to the decoder
    assert setarrays.split(escaped) is not None
    assert ("blocklist", "full") not in setarrays.split(escaped)[1]  # type: ignore[index]
    decoded_whole = B.parse_bundle(escaped, Path("/"))
    assert streamed.elements["blocklist"] == decoded_whole.elements["blocklist"]
    assert len(streamed.elements["blocklist"]) == len(decoded_whole.elements["blocklist"])


def test_a_bad_element_in_a_plain_array_names_its_set() -> None:
    with pytest.raises(B.BundleError, match=r"sets\.blocklist: .*'10\.0\.0\.256'"):
        B.parse_bundle(_bundle(["10.0.0.1", "10.0.0.256"]), Path("/"))
