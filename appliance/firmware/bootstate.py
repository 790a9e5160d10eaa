"""The A/B boot state kept in grubenv, and what each step does to it. Pure.

Variables (GRUB's ``grub.cfg`` on the EFI system partition reads and writes the same):

``slot``
    the slot known good: GRUB boots it when nothing is on trial.
``try_slot``, ``try_count``
    a slot on trial and the boots it has left. At each boot GRUB takes one off and boots
    ``try_slot``; with none left it clears both, records ``failed_slot`` and boots ``slot``.
``failed_slot``
    the last slot that fell back (cleared by the next update).

An update writes the slot that is not running, then puts it on trial. The boot check marks
the running slot good once the appliance is READY (``slot`` becomes the trial slot); a trial
slot whose appliance never gets READY reboots, so its counter runs out and GRUB goes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SLOTS = ("A", "B")
DEFAULT_TRIES = 3
MAX_TRIES = 3  # grub.cfg counts down from 3 at most


class BootStateError(ValueError):
    """The step cannot be taken in this state; ``str()`` says why."""


@dataclass(frozen=True)
class BootState:
    slot: str  # the good slot
    try_slot: str  # "" when none is on trial
    try_count: int
    failed_slot: str

    def on_trial(self, running: str) -> bool:
        return bool(self.try_slot) and self.try_slot == running


def other(slot: str) -> str:
    check_slot(slot)
    return SLOTS[1 - SLOTS.index(slot)]


def check_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise BootStateError(f"unknown slot {slot!r} (A or B)")
    return slot


def read(env: Mapping[str, str]) -> BootState:
    slot = env.get("slot", "") if env.get("slot", "") in SLOTS else "A"
    try_slot = env.get("try_slot", "")
    if try_slot not in SLOTS:
        try_slot = ""
    try:
        count = int(env.get("try_count", "") or 0)
    except ValueError:
        count = 0
    failed = env.get("failed_slot", "")
    failed = failed if failed in SLOTS else ""
    return BootState(slot, try_slot, max(0, min(count, MAX_TRIES)), failed)


def write(env: Mapping[str, str], state: BootState) -> dict[str, str]:
    out = dict(env)
    out.update(
        slot=state.slot,
        try_slot=state.try_slot,
        try_count=str(state.try_count) if state.try_slot else "",
        failed_slot=state.failed_slot,
    )
    return out


def switch(state: BootState, running: str, tries: int = DEFAULT_TRIES) -> BootState:
    """After the other slot is written: boot it next, ``tries`` times at most."""
    check_slot(running)
    if not 1 <= tries <= MAX_TRIES:
        raise BootStateError(f"tries: 1 to {MAX_TRIES}")
    if state.on_trial(running):
        raise BootStateError(
            f"slot {running} is on trial (not marked good yet): its fallback cannot be replaced"
        )
    return BootState(slot=running, try_slot=other(running), try_count=tries, failed_slot="")


def target(running: str) -> str:
    """The slot an update writes: the one not running."""
    return other(running)


def mark_good(state: BootState, running: str) -> BootState:
    """The running slot's appliance is READY: it becomes the good slot."""
    check_slot(running)
    if state.on_trial(running):
        return BootState(slot=running, try_slot="", try_count=0, failed_slot="")
    if state.try_slot:
        # Booted the good slot while a trial was pending: leave the trial to GRUB.
        return state
    return BootState(slot=running, try_slot="", try_count=0, failed_slot=state.failed_slot)
