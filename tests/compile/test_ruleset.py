"""Compile errors without a kernel: one place turns them into profile errors."""

from __future__ import annotations

import pytest

from appliance.compile.ruleset import CompileError, as_profile_error
from appliance.errors import ProfileError


def test_a_compile_error_becomes_a_profile_error_at_the_given_place() -> None:
    with pytest.raises(ProfileError) as caught, as_profile_error("/etc/appliance/edge.toml"):
        raise CompileError("forwards", "a forward's dport cannot be a set")
    assert caught.value.path == "/etc/appliance/edge.toml"
    assert caught.value.key == "forwards"
    assert caught.value.message == "a forward's dport cannot be a set"
    assert caught.value.__cause__ is None


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), as_profile_error("<hub>"):
        raise KeyError("x")
