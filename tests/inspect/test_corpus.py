"""The rule corpus (tests/inspect/rules): the share that loads, and every rule left out has
a named reason; nothing ends in another error than a rule-file one."""

from __future__ import annotations

from pathlib import Path

from appliance.inspect.rules import Variables, load_rules

CORPUS = Path(__file__).parent / "rules" / "corpus.rules"


def test_corpus_loads_with_reasons_for_the_rest() -> None:
    rules = load_rules([str(CORPUS)], Variables.from_networks(None))
    total = len(rules.signatures) + len(rules.skipped)
    assert total >= 121
    # every rule loads
    assert rules.skipped == []
    assert len(rules.signatures) == total
