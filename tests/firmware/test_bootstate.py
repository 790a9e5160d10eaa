"""The A/B boot state: an update puts the other slot on trial, READY makes it the good one."""

from __future__ import annotations

import pytest

from appliance.firmware import bootstate as S


def test_fresh_image_boots_slot_a() -> None:
    state = S.read({"slot": "A"})
    assert state == S.BootState("A", "", 0, "")
    assert S.target("A") == "B"


def test_update_then_ready_switches_slot() -> None:
    env = {"slot": "A"}
    trial = S.switch(S.read(env), running="A", tries=2)
    assert trial == S.BootState(slot="A", try_slot="B", try_count=2, failed_slot="")
    env = S.write(env, trial)
    assert env == {"slot": "A", "try_slot": "B", "try_count": "2", "failed_slot": ""}
    # GRUB took one boot off and booted B; B's appliance got READY.
    booted = S.read({**env, "try_count": "1"})
    assert booted.on_trial("B")
    assert S.mark_good(booted, "B") == S.BootState("B", "", 0, "")


def test_trial_slot_cannot_be_updated_before_it_is_good() -> None:
    state = S.BootState("A", "B", 1, "")
    with pytest.raises(S.BootStateError, match="on trial"):
        S.switch(state, running="B")


def test_fallback_is_left_to_grub() -> None:
    # After a fallback GRUB cleared the trial and recorded the failed slot.
    state = S.read({"slot": "A", "try_slot": "", "try_count": "", "failed_slot": "B"})
    assert state.failed_slot == "B"
    assert S.mark_good(state, "A") == state
    # The next update clears it.
    assert S.switch(state, "A").failed_slot == ""


@pytest.mark.parametrize("tries", [0, 4])
def test_tries_within_what_grub_counts(tries: int) -> None:
    with pytest.raises(S.BootStateError):
        S.switch(S.read({}), "A", tries)


def test_garbage_in_the_environment_reads_as_slot_a() -> None:
    assert S.read({"slot": "Z", "try_slot": "C", "try_count": "x"}) == S.BootState("A", "", 0, "")
