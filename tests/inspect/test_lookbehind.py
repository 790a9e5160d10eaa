"""Look-behinds of alternatives of different fixed widths: split into one look-behind each,
which means what PCRE means, checked against the definition on generated text; the rest is
refused cleanly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import RuleFileError
from appliance.inspect.lookbehind import split_lookbehinds
from appliance.inspect.match import contents_match
from appliance.inspect.rules import Variables, load_rules, parse_pcre, parse_rules

VARS = Variables.from_networks(None)


@pytest.mark.parametrize(
    ("pattern", "split"),
    [
        (r"(?<!TOP|//)\Wsecret", r"(?:(?<!TOP)(?<!//))\Wsecret"),
        (r"(?<=ab|c)x", r"(?:(?<=ab)|(?<=c))x"),
        (r"(?<=a)x|y", r"(?<=a)x|y"),  # one alternative: as it was
        (r"a(?:b|cd)(?<=b|cd)+", r"a(?:b|cd)(?:(?<=b)|(?<=cd))+"),
        (r"(?<=[|)]|\)\|)z", r"(?:(?<=[|)])|(?<=\)\|))z"),  # | and ) in a class, escaped
        (r"(?<=[]|]|xy)z", r"(?:(?<=[]|])|(?<=xy))z"),  # a leading ] in a class
        (r"(?<=[[:alpha:]|]|xy)", r"(?:(?<=[[:alpha:]|])|(?<=xy))"),
        (r"(?<!a(?#x|y)|bc)", r"(?:(?<!a(?#x|y))(?<!bc))"),  # a comment
        (r"(?P<n>(?<=a|bc))(?P=n)", r"(?P<n>(?:(?<=a)|(?<=bc)))(?P=n)"),
        (r"(?<=a(?<!b|cd)|ef)", r"(?:(?<=a(?:(?<!b)(?<!cd)))|(?<=ef))"),  # nested
        (r"(?<=a|bc", r"(?<=a|bc"),  # unbalanced: left to the compiler
        (r"a)(?<=a|bc)", r"a)(?<=a|bc)"),
    ],
)
def test_split(pattern: str, split: str) -> None:
    assert split_lookbehinds(pattern) == split


def test_a_comment_under_the_x_flag_is_not_read() -> None:
    pattern = "(?<=a|bc) # (?<=x|yz) |\nq"
    assert split_lookbehinds(pattern, verbose=True) == "(?:(?<=a)|(?<=bc)) # (?<=x|yz) |\nq"
    assert split_lookbehinds(pattern) == "(?:(?<=a)|(?<=bc)) # (?:(?<=x)|(?<=yz)) |\nq"


# (alternative, its width)
ALTERNATIVES = [("TOP", 3), ("//", 2), ("a.c", 3), (r"\d", 1), ("(?:xy|zz)", 2), ("[^a]b", 2)]
TEXT = st.text(alphabet="TOPtop/ac1xyzb s", max_size=24)


def reference(text: str, alts: list[tuple[str, int]], negated: bool, then: str) -> bool:
    """PCRE's meaning: somewhere ``then`` matches at a place where some alternative (none,
    negated) matches the characters just before it, each over its own width."""
    for at in range(len(text) + 1):
        before = any(
            at >= width and re.fullmatch(alt, text[at - width : at], re.I) is not None
            for alt, width in alts
        )
        if before != negated and re.compile(then, re.I).match(text, at):
            return True
    return False


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    TEXT,
    st.lists(st.sampled_from(ALTERNATIVES), min_size=2, max_size=4, unique=True),
    st.booleans(),
    st.sampled_from(["s", r"\W", "[^/]", ""]),
)
def test_the_split_means_what_pcre_means(
    text: str, alts: list[tuple[str, int]], negated: bool, then: str
) -> None:
    body = "|".join(a for a, _ in alts)
    pattern = f"(?<{'!' if negated else '='}{body}){then}"
    regex = re.compile(split_lookbehinds(pattern), re.I)
    assert (regex.search(text) is not None) is reference(text, alts, negated, then)


def test_groups_keep_their_numbers_and_the_first_alternative_that_holds_captures() -> None:
    regex = re.compile(split_lookbehinds(r"(x)(?<=(x)|(ax))(y)\4"))
    assert regex.groups == 4
    found = regex.search("axyy")
    assert found is not None and found.groups() == ("x", "x", None, "y")
    found = re.compile(split_lookbehinds(r"(?<=(b)|(ab))(y)\3")).search("abyy")
    assert found is not None and found.groups() == ("b", None, "y")


def test_the_et_rule_loads_and_matches_as_pcre_would(tmp_path: Path) -> None:
    rule = (
        'alert tcp any any -> any 25 (msg:"SMTP Secret"; flow:to_server; content:"Subject|3A|"; '
        'pcre:"/(?<!TOP|//)\\Wsecret[^\\w/a]/ism"; sid:2002461; rev:4;)'
    )
    (sig,) = parse_rules(rule, "et.rules", VARS)
    for payload, expected in [
        (b"Subject: a secret!", True),
        (b"Subject: TOP secret!", False),  # TOP ends where the \W starts
        (b"Subject: top\nsecret.", False),  # /i: the look-behind's too
        (b"Subject: TOPS secret!", True),
        (b"Subject: x// SECRET!", False),
        (b"Subject: x//secret!", True),  # the \W is the second /, after x/
        (b"Subject: x/ secret!", True),
        (b"Subject: a secret/", False),
    ]:
        assert contents_match(sig, {"pkt": payload}) is expected, payload


@pytest.mark.parametrize(
    "pcre",
    [
        '"/(?<=a+)b/"',  # a quantifier of no fixed width
        '"/(?<=x(?:a|bc))b/"',  # alternatives of different widths below the top level
        '"/(?<=a|b*)c/"',
    ],
)
def test_a_look_behind_of_variable_width_is_refused_cleanly(tmp_path: Path, pcre: str) -> None:
    with pytest.raises(ValueError, match="look-behind of variable width"):
        parse_pcre(pcre)
    path = tmp_path / "r.rules"
    path.write_text(
        f'alert tcp any any -> any any (msg:"x"; pcre:{pcre}; sid:1;)\n'
        'alert tcp any any -> any any (msg:"ok"; content:"a"; sid:2;)\n'
    )
    rules = load_rules([str(path)], VARS)
    assert [s.sid for s in rules.signatures] == [2]
    assert rules.skipped[0].warning == (
        f"{path}:1: pcre: a look-behind of variable width (only alternatives of fixed widths run)"
    )
    with pytest.raises(RuleFileError, match=r"r\.rules:1: pcre: a look-behind of variable"):
        load_rules([str(path)], VARS, strict=True)


def test_a_pattern_python_runs_as_it_is_is_not_rewritten() -> None:
    regex, _, _, _ = parse_pcre('"/(?<=ab|cd)x/"')  # one width: compiled as written
    assert regex.pattern == b"(?<=ab|cd)x"
    regex, _, _, _ = parse_pcre('"/(?<=ab|c)x/"')
    assert regex.pattern == b"(?:(?<=ab)|(?<=c))x"
