"""The elements file's fast parse and diff give what the general parse gives."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import ProfileError
from appliance.model import elements_fast
from appliance.model.elements import Elements
from appliance.model.elements_fast import Changed, Recalled, aligned, parse_hosts
from appliance.model.parse import load_profile

PROFILE = """version = 1
name = "fast"
[sets.feed]
type = "{type}"
interval = {interval}
elements_file = "feed.txt"
"""


def load(folder: Path, lines: list[str], set_type: str, interval: bool) -> Elements:
    (folder / "feed.txt").write_text("".join(f"{line}\n" for line in lines))
    profile = folder / "profile.toml"
    profile.write_text(PROFILE.format(type=set_type, interval=str(interval).lower()))
    return load_profile(profile).sets[0].elements


def general(
    folder: Path, lines: list[str], set_type: str, interval: bool, monkeypatch: pytest.MonkeyPatch
) -> Elements | str:
    """What the line-by-line parse gives (or its error)."""
    with monkeypatch.context() as patch:
        patch.setattr(elements_fast, "read", lambda *_args: None)
        try:
            return load(folder, lines, set_type, interval)
        except ProfileError as exc:
            return str(exc)


def fast(
    folder: Path,
    lines: list[str],
    set_type: str,
    interval: bool,
    last: dict[str, elements_fast.Parsed],
) -> tuple[Elements | str, dict[str, elements_fast.Parsed]]:
    with elements_fast.remembering(last) as seen:
        try:
            return load(folder, lines, set_type, interval), seen
        except ProfileError as exc:
            return str(exc), seen


def v4(value: int) -> str:
    return str(ipaddress.IPv4Address((10 << 24) | value))


def v6(value: int) -> str:
    return str(ipaddress.IPv6Address((0x20010DB8 << 96) | value))


values = st.integers(0, 4095)  # a small space: neighbours and repeats are common
odd_lines = st.sampled_from(
    [
        "# a comment",
        "",
        "  10.0.0.7  ",
        "10.0.0.8 # trailing",
        "10.0.2.0/24",
        "10.0.0.4/30",
        "10.0.0.1-10.0.0.9",
        "2001:db8::/120",
        "not-an-address",
        "10.0.0.256",
        "2001:DB8::1",
        "10.0.00.1",
    ]
)


@st.composite
def edits(draw: st.DrawFn) -> tuple[str, bool, list[str], list[str], list[str]]:
    """An old file of addresses and two new versions, each made from the one before by
    adds, deletes, repeats, moves and, sometimes, a line the fast path does not take."""
    set_type = draw(st.sampled_from(["ipv4_addr", "ipv6_addr"]))
    interval = draw(st.booleans())
    text = v4 if set_type == "ipv4_addr" else v6
    old = [text(v) for v in draw(st.lists(values, max_size=60))]
    new = edited(draw, old, text)
    return set_type, interval, old, new, edited(draw, new, text)


def edited(draw: st.DrawFn, old: list[str], text: Callable[[int], str]) -> list[str]:
    new = list(old)
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["add", "delete", "repeat", "move", "odd"]))
        if kind == "add":
            new.insert(draw(st.integers(0, len(new))), text(draw(values)))
        elif kind == "delete" and new:
            del new[draw(st.integers(0, len(new) - 1))]
        elif kind == "repeat" and new:
            new.insert(draw(st.integers(0, len(new))), draw(st.sampled_from(new)))
        elif kind == "move" and new:
            new.append(new.pop(draw(st.integers(0, len(new) - 1))))
        elif kind == "odd":
            new.insert(draw(st.integers(0, len(new))), draw(odd_lines))
    return new


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edits())
def test_a_diff_gives_what_the_whole_parse_gives(
    monkeypatch: pytest.MonkeyPatch, case: tuple[str, bool, list[str], list[str], list[str]]
) -> None:
    monkeypatch.setattr(elements_fast, "BLOCK", 48)  # blocks of a few lines: many of them
    monkeypatch.setattr(elements_fast, "WINDOW", 32)
    set_type, interval, *versions = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        last: dict[str, elements_fast.Parsed] = {}
        for lines in versions:  # each diffed against the one before, when it was all fast
            result, seen = fast(folder, lines, set_type, interval, last)
            expected = general(folder, lines, set_type, interval, monkeypatch)
            assert result == expected  # the same elements, or the same FILE:LINE error
            if isinstance(result, Elements):
                assert len(result) == len(expected)
            last = dict(seen)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1 << 20), max_size=80), st.booleans(), st.booleans())
def test_a_file_of_addresses_parses_as_the_general_parse(
    picked: list[int], six: bool, interval: bool
) -> None:
    set_type = "ipv6_addr" if six else "ipv4_addr"
    texts = [(v6 if six else v4)(v) for v in picked]
    parsed = parse_hosts(set_type, interval, "".join(f"{t}\n" for t in texts).encode())
    assert parsed is not None
    assert parsed.elements == Elements.of(set_type, interval, texts)
    assert len(parsed.elements) == len(Elements.of(set_type, interval, texts))
    assert parsed.unique == (len(set(picked)) == len(picked))
    assert parsed.lines == len(texts)


@pytest.mark.parametrize(
    "text",
    [
        b"10.0.0.1\n\n10.0.0.2\n",  # a blank line
        b"10.0.0.1\n# feed\n",
        b"10.0.0.0/24\n",
        b" 10.0.0.1\n",
        b"10.0.0.1\r\n",
        b"10.0.0.01\n",
        b"10.0.0.1 10.0.0.2\n",
        "10.0.0.1\n\u00e9\n".encode(),
    ],
)
def test_anything_but_one_address_a_line_is_left_to_the_general_parse(text: bytes) -> None:
    assert parse_hosts("ipv4_addr", True, text) is None


def test_a_file_without_its_last_line_end() -> None:
    parsed = parse_hosts("ipv4_addr", False, b"10.0.0.1\n10.0.0.3")
    assert parsed is not None and list(parsed.elements) == ["10.0.0.1", "10.0.0.3"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.integers(0, 50), max_size=300),
    st.lists(st.integers(0, 50), max_size=300),
    st.sampled_from([(8, 4), (40, 16), (1 << 13, 1 << 14)]),
)
def test_aligned_parts_account_for_every_line(
    monkeypatch: pytest.MonkeyPatch,
    old_values: list[int],
    new_values: list[int],
    sizes: tuple[int, int],
) -> None:
    monkeypatch.setattr(elements_fast, "BLOCK", sizes[0])
    monkeypatch.setattr(elements_fast, "WINDOW", sizes[1])
    old = "".join(f"{v}\n" for v in old_values).encode()
    new = "".join(f"{v}\n" for v in new_values).encode()
    gone, came = aligned(old, new)
    assert sorted(old.splitlines()) == sorted(
        _minus(new.splitlines(), came.splitlines()) + gone.splitlines()
    )
    spread = elements_fast._aligned(old, new, spread=True)  # None: changes found spread
    if spread is not None:
        gone, came = spread
        assert sorted(old.splitlines()) == sorted(
            _minus(new.splitlines(), came.splitlines()) + gone.splitlines()
        )


def _minus(lines: list[bytes], taken: list[bytes]) -> list[bytes]:
    left = list(lines)
    for line in taken:
        left.remove(line)
    return left


def test_a_shifted_feed_is_diffed_by_its_changed_lines_only(tmp_path: Path) -> None:
    """The oldest lines dropped and new ones appended: only those are parsed, and the
    plan against the recalled elements needs no pass over the others."""
    old = [v4(v) for v in range(0, 60000, 3)]
    new = old[5000:] + [v4(v) for v in range(1, 15000, 3)]
    first, seen = fast(tmp_path, old, "ipv4_addr", False, {})
    last = next(iter(seen.values()))
    gone, came = aligned(last.data, "".join(f"{t}\n" for t in new).encode())
    assert len(gone.splitlines()) < 5000 + 1000 and len(came.splitlines()) < 5000 + 1000
    assert isinstance(first, Elements) and first.spans is not None
    recalled = Recalled("ipv4_addr", False, first.spans)
    last.elements = recalled
    second, _ = fast(tmp_path, new, "ipv4_addr", False, {next(iter(seen)): last})
    assert isinstance(second, Changed) and second.base is recalled
    assert second.minus(recalled) == Elements.of("ipv4_addr", False, set(new) - set(old))
    assert recalled.minus(second) == Elements.of("ipv4_addr", False, set(old) - set(new))
    assert second == Elements.of("ipv4_addr", False, new)
    assert len(second) == len(set(new))


def test_an_unchanged_file_keeps_its_elements(tmp_path: Path) -> None:
    lines = [v4(v) for v in range(0, 3000, 2)]
    first, seen = fast(tmp_path, lines, "ipv4_addr", True, {})
    again, _ = fast(tmp_path, lines, "ipv4_addr", True, dict(seen))
    assert again is first


spans_pairs = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 6)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(spans_pairs, spans_pairs, st.booleans(), st.booleans())
def test_the_difference_at_c_speed_is_the_merge_difference(
    a: list[tuple[int, int]], b: list[tuple[int, int]], interval: bool, six: bool
) -> None:
    set_type = "ipv6_addr" if six else "ipv4_addr"
    base = (1 << 100) if six else 0
    texts = [
        [f"{ipaddress.ip_address(base + f)}-{ipaddress.ip_address(base + f + n)}" for f, n in s]
        for s in (a, b)
    ]
    if not interval:  # hash sets: hosts
        texts = [[str(ipaddress.ip_address(base + f)) for f, _n in s] for s in (a, b)]
    mine, theirs = (Elements.of(set_type, interval, t) for t in texts)
    assert mine.spans is not None and theirs.spans is not None
    fast_mine = elements_fast.Counted(set_type, interval, mine.spans)
    assert fast_mine.minus(theirs) == mine.minus(theirs)
    assert len(fast_mine.minus(theirs)) == len(mine.minus(theirs))


def test_elements_less_themselves_are_none() -> None:
    spans = Elements.of("ipv4_addr", False, ["10.0.0.1", "10.0.0.2"]).spans
    assert spans is not None
    items = elements_fast.Counted("ipv4_addr", False, spans)
    assert not items.minus(items) and len(items.minus(items)) == 0


@pytest.mark.parametrize("kind", ["fifo", "device", "not utf-8"])
def test_what_the_general_parse_refuses_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    feed = tmp_path / "feed.txt"
    if kind == "fifo":
        os.mkfifo(feed)  # never opened for writing: reading must not wait for a writer
    elif kind == "device":
        feed = Path("/dev/zero")
    else:
        feed.write_bytes(b"10.0.0.1\n\xff\n")
    profile = tmp_path / "profile.toml"
    text = PROFILE.format(type="ipv4_addr", interval="false")
    profile.write_text(text.replace('"feed.txt"', f'"{feed}"'))
    with elements_fast.remembering({}), pytest.raises(ProfileError) as raised:
        load_profile(profile)
    message = str(raised.value)
    assert "\n" not in message and "sets.feed.elements_file" in message
    assert {"fifo": "a FIFO", "device": "a character device", "not utf-8": "not UTF-8"}[
        kind
    ] in message


@pytest.mark.parametrize("line", ["10.0.0.\u00e9", "10.0.0.7\r", "10.0.0.7 "])
def test_a_changed_line_that_is_not_one_address_gives_the_general_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    """Only the changed lines are read at a diff: one that is not one address (not ASCII,
    a carriage return, a blank) sends the file to the general parse and its FILE:LINE."""
    old = [v4(v) for v in range(0, 3000, 3)]
    new = [*old[:500], line, *old[500:]]
    _first, seen = fast(tmp_path, old, "ipv4_addr", False, {})
    result, _ = fast(tmp_path, new, "ipv4_addr", False, dict(seen))
    assert result == general(tmp_path, new, "ipv4_addr", False, monkeypatch)


# ---- the diff by values (changes spread through the file) ----------------------------


def written(set_type: str, value: int, form: int) -> str:
    """An address in one of the textual forms ``inet_pton`` reads the same."""
    if set_type == "ipv4_addr":
        return v4(value)
    address = ipaddress.IPv6Address((0x20010DB8 << 96) | value)
    return [str(address), address.exploded, str(address).upper(), address.exploded.upper()][form]


@st.composite
def value_edits(draw: st.DrawFn) -> tuple[str, bool, list[str], list[str]]:
    """An old file of distinct addresses and a new one: lines deleted and added spread
    through it or at its ends, and sometimes a repeat, a comment, a network, a range or an
    address written another way."""
    set_type = draw(st.sampled_from(["ipv4_addr", "ipv6_addr"]))
    interval = draw(st.booleans())
    held = sorted(draw(st.sets(st.integers(0, 600), max_size=120)))
    draw(st.randoms(use_true_random=False)).shuffle(held)
    old = [written(set_type, v, 0) for v in held]
    kept = [
        written(set_type, v, draw(st.integers(0, 3)) if draw(st.booleans()) else 0)
        for v in held
        if draw(st.integers(0, 3))  # a quarter deleted
    ]
    came = [written(set_type, v, 0) for v in draw(st.sets(st.integers(0, 800), max_size=40))]
    if draw(st.booleans()):  # spread through
        new = list(kept)
        for line in came:
            new.insert(draw(st.integers(0, len(new))), line)
    else:
        new = kept + came
    for _ in range(draw(st.integers(0, 2))):
        odd = draw(st.one_of(odd_lines, st.sampled_from(new or ["10.0.0.1"])))
        new.insert(draw(st.integers(0, len(new))), odd)
    return set_type, interval, old, new


@pytest.mark.parametrize("core", ["compiled", "python"])
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=value_edits())
def test_the_diff_by_values_is_the_diff_by_lines(
    monkeypatch: pytest.MonkeyPatch, core: str, case: tuple[str, bool, list[str], list[str]]
) -> None:
    """The same spans, counts, lines, added and removed elements as the diff by lines and
    the general parse, with the compiled splice and its twin; None exactly where a line is
    not one address or a value repeats (the diff by lines then decides)."""
    from appliance.model import splice

    if core == "python":
        monkeypatch.setenv(splice.ENV, "python")
    elif splice.compiled() is None:
        pytest.skip("the compiled splice is not built")
    set_type, interval, old, new = case
    first = parse_hosts(set_type, interval, "".join(f"{t}\n" for t in old).encode())
    assert first is not None and first.unique
    assert first.elements.spans is not None
    last = elements_fast.Parsed(
        set_type,
        interval,
        first.data,
        Recalled(set_type, interval, first.elements.spans),
        first.lines,
        True,
    )
    data = "".join(f"{t}\n" for t in new).encode()
    by_values = elements_fast.diff_values(last, data)
    by_lines = elements_fast.diff_lines(last, data)
    whole = parse_hosts(set_type, interval, data)
    if whole is None or not whole.unique:
        assert by_values is None
        return
    assert by_values is not None and by_lines is not None
    assert isinstance(by_values.elements, Changed) and by_values.elements.base is last.elements
    assert by_values.elements == by_lines.elements == whole.elements
    assert by_values.elements == Elements.of(set_type, interval, new)
    assert len(by_values.elements) == len(by_lines.elements) == len(whole.elements)
    assert (by_values.lines, by_values.unique) == (by_lines.lines, by_lines.unique)
    assert by_values.lines == len(new)
    assert isinstance(by_lines.elements, Changed)
    for part in ("added", "removed"):
        mine, theirs = getattr(by_values.elements, part), getattr(by_lines.elements, part)
        assert mine.spans.words() == theirs.spans.words() and len(mine) == len(theirs)
    assert by_values.elements.minus(last.elements) == by_lines.elements.minus(last.elements)
    assert last.elements.minus(by_values.elements) == last.elements.minus(by_lines.elements)


def test_changes_spread_through_are_diffed_by_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tenth line of 40,000 changed: the lines that went and came are not read (the
    compiled splice); the result is the diff by lines'."""
    from appliance.model import splice

    if splice.compiled() is None:
        pytest.skip("the compiled splice is not built")
    held = range(0, 120_000, 3)
    old = [v4(v) for v in held]
    new = [v4(v + 1) if i % 10 == 0 else v4(v) for i, v in enumerate(held)]
    first = parse_hosts("ipv4_addr", False, "".join(f"{t}\n" for t in old).encode())
    assert first is not None
    data = "".join(f"{t}\n" for t in new).encode()
    expected = elements_fast.diff_lines(first, data)
    with monkeypatch.context() as patch:
        patch.setattr(elements_fast, "changes", lambda *_args: pytest.fail("lines read"))
        found = elements_fast.diff_hosts(first, data)
    assert found is not None and expected is not None
    assert found.elements == expected.elements == Elements.of("ipv4_addr", False, new)
    assert found.lines == expected.lines == 40_000 and found.unique
