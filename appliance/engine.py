"""Bring the kernel to a desired table: plan, apply, run-time set changes.

The pure parts decide (``reconcile``); this module reads the kernel through the backend,
asks them, and runs the one transaction they return.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from appliance.compile.nftjson import TABLE_FAMILY, TABLE_NAME, Json, element_command
from appliance.compile.ruleset import element_json
from appliance.errors import KernelError, UsageError
from appliance.model.elements import Elements
from appliance.model.intervals import Spans, span_text, width_of
from appliance.model.values import canonical_element, element_bounds
from appliance.reconcile.plan import Plan, make_plan, split_tags, transaction
from appliance.reconcile.readback import EventJournal, follow, joined, shapes, without
from appliance.reconcile.segments import (
    DesiredSegment,
    ObservedLinks,
    SegmentError,
    SegmentPlan,
    SegmentStepError,
    Step,
    desired_segments,
    plan_segments,
    undo_steps,
)
from appliance.reconcile.state import (
    HUB_TAG,
    PROFILE_TAG,
    Desired,
    Element,
    Observed,
    observed_from_listing,
    parse_element,
    runtime_elements,
)


class Backend(Protocol):
    def run(self, commands: list[Json]) -> list[Json]: ...
    def list_table(self) -> list[Json] | None: ...
    def list_set(self, name: str, elements: bool = True) -> Json | None: ...


class SetElements(Protocol):
    """Set elements straight from packed spans, without JSON (nf_tables netlink:
    :class:`appliance.adapters.nfsets.NfSets`). ``apply`` returns the number of kernel
    transactions it made; ``dump`` leaves out elements with a timeout."""

    def apply(
        self,
        set_name: str,
        *,
        width: int,
        interval: bool,
        add: Spans | None,
        delete: Spans | None,
        flush: bool = False,
        tag: str | None = None,
    ) -> int: ...

    def dump(self, set_name: str, *, width: int, interval: bool) -> dict[str | None, Spans]: ...


class LinkBackend(Protocol):
    def observe(self, wanted: Iterable[DesiredSegment] = ()) -> ObservedLinks: ...
    def run(self, steps: list[Step]) -> list[Step]: ...


@dataclass
class SetInfo:
    """A set as read back from the kernel, with its elements."""

    name: str
    type: str
    flags: list[str]
    elements: list[Element]
    size: int | None = None  # the declared maximum of elements


# How long a read-back that found nothing to change stands for the kernel while the ruleset
# generation stays the same (an element's timeout ends it sooner).
QUIET_SECONDS = 300.0


@dataclass
class Quiet:
    """The last read-back that found the kernel as ``desired`` wants it."""

    generation: int
    desired: Desired
    observed: Observed
    until: float  # monotonic


@dataclass
class Known:
    """What an earlier change left in address and port sets without timeouts (their
    handles, tagged and run-time elements), with the ruleset generation it left. While the
    kernel's generation is still that one, no transaction happened since: those sets hold
    exactly this, and need not be read (a dump of a million elements takes half a minute).
    Another generation means another writer; then every set is read."""

    generation: int
    handles: dict[str, int]
    tagged: dict[str, dict[str, Elements]]
    elements: dict[str, dict[str, Element]]


# What an element costs the kernel through nf_tables netlink, in microseconds, measured on a
# 1,000,000-element IPv4 set (bench/sets_netlink.py --refill-curve; bench/RESULTS.md): an
# element added and an element deleted by a chunked delta, and an element of the set after
# a flush and refill in one transaction (the flush of the old elements included); hash
# sets, then interval sets, whose deletes cost the rbtree most. So an interval set is
# refilled once its deletes alone pass about 44% of the set, a hash set past about 53%,
# and any set whose elements are all replaced.
ADD_US = {False: 1.8, True: 6.0}
DELETE_US = {False: 1.6, True: 11.0}
REFILL_US = {False: 1.8, True: 8.6}


def refill_cheaper(interval: bool, adds: int, deletes: int, after: int) -> bool:
    """Whether a flush and refill of a set that will hold ``after`` elements costs the
    kernel less than a delta of ``adds`` and ``deletes`` elements."""
    delta = adds * ADD_US[interval] + deletes * DELETE_US[interval]
    return delta > after * REFILL_US[interval]


SET_FULL = "Too many open files in system"  # ENFILE: the kernel's word for a full set


def _timed(elements: dict[str, Element]) -> bool:
    return any(e.timeout is not None or e.expires is not None for e in elements.values())


def _emptied(
    desired: Desired, elements: dict[str, Elements], names: set[str]
) -> dict[str, Elements]:
    return {n: desired.empty(n) if n in names else v for n, v in elements.items()}


class Engine:
    """The table through ``backend``; with ``links``, the segments' links as well.

    A backend that can tell the ruleset generation (``generation()``) spares read-backs:
    while the generation is the one of a read-back that found nothing to change, and the
    policy is the same, the table is not listed again (no element listing of large sets
    every few seconds); any transaction, ours or another writer's, changes the generation.

    With ``sets`` (nf_tables netlink), address and port elements never go through JSON:
    the table is listed without elements (``list_structure``), a set's elements are read
    with one streamed dump into packed spans, and element deltas go from the spans to the
    kernel in chunked transactions. The table definition a create sends carries no such
    elements: a new table's sets start empty and are filled right after (as a first load
    always did). A structural change stays one transaction, old or new: it keeps the sets
    it does not redefine, with their elements, and carries their delta and the elements
    of the sets it redefines through JSON, so no packet sees a set empty.
    """

    def __init__(
        self,
        backend: Backend,
        links: LinkBackend | None = None,
        clock: Callable[[], float] = time.monotonic,
        sets: SetElements | None = None,
    ) -> None:
        self.backend = backend
        self.links = links
        self.clock = clock
        if sets is None:  # a backend that offers the netlink path: elements go by it
            make = getattr(backend, "set_elements", None)
            sets = make() if make is not None else None
        self.sets = sets
        self.transactions = 0  # kernel transactions of the last change carried out
        self.created: Observed | None = None  # a new table read back before its elements
        self.quiet: Quiet | None = None
        self.listings = 0  # full table listings made by converge
        # set -> its type, flags and size, read once: they change only with the table's
        # structure (a swap here clears them; a refused change by another writer's too)
        self.set_shapes: dict[str, SetInfo] = {}
        # what an earlier process's change left (see Known); sets taken from it by observe
        self.known: Known | None = None
        self.recalled: set[str] = set()
        self.refilled: set[str] = set()  # sets the last change flushed and refilled
        # the kept sets after a structural change (a swap leaves no quiet read-back)
        self.swapped: Known | None = None
        # the kernel's nf_tables events, when a table watch records them (follow_events)
        self.journal: EventJournal | None = None
        self.followed: set[str] = set()  # sets the last read-back took from the events

    def follow_events(self) -> EventJournal:
        """A journal for the table watch to record the kernel's transactions in: a
        read-back after other processes' transactions then takes their element changes
        from it instead of dumping the sets (:mod:`appliance.reconcile.readback`)."""
        if self.journal is None:
            self.journal = EventJournal()
        return self.journal

    def _follow(self, quiet: Quiet | None, generation: int | None) -> None:
        """Where the journal holds every transaction since ``quiet``'s generation, what
        the sets hold now, as :attr:`known` at ``generation``: the next listing takes
        them from it (a set the events do not fit is left out, and dumped)."""
        self.followed = set()
        journal = self.journal
        if journal is None or quiet is None or generation is None:
            return
        if quiet.observed.objects is None or generation <= quiet.generation:
            return
        if self.sets is None or self.clock() >= quiet.until:
            return
        transactions = journal.between(quiet.generation, generation)
        if transactions is None:
            journal.note(
                False, f"generations {quiet.generation + 1} to {generation}: not all known"
            )
            return
        set_shapes = shapes(quiet.observed.objects)
        handles = {
            body["name"]: body["handle"]
            for obj in quiet.observed.objects
            if (body := obj.get("set")) is not None
            and body["name"] in set_shapes
            and isinstance(body.get("handle"), int)
        }
        if any(_timed(quiet.observed.elements.get(name, {})) for name in handles):
            journal.note(False, "elements with a timeout")
            return
        tagged = {name: dict(quiet.observed.tagged.get(name, {})) for name in handles}
        elements = {name: dict(quiet.observed.elements.get(name, {})) for name in handles}
        unfollowed = follow(transactions, handles, set_shapes, tagged, elements)
        for name in unfollowed:
            del handles[name]
        self.known = Known(generation, handles, tagged, elements)
        self.followed = set(handles)
        detail = f"generations {quiet.generation + 1} to {generation}"
        if unfollowed:
            detail += f"; read again: {', '.join(sorted(unfollowed))}"
        journal.note(True, detail)

    def observe(self) -> Observed:
        structure = getattr(self.backend, "list_structure", None)
        if self.sets is None or structure is None:
            return observed_from_listing(self.backend.list_table())
        before = self._generation() if self.known is not None else None
        listing: list[Json] | None = structure()
        observed = observed_from_listing(listing)
        known = self._known_at(before)
        self.recalled = set()
        for obj in listing or []:
            body = obj.get("set")
            if body is not None and not (known is not None and self._recall(known, observed, body)):
                self._read_elements(observed, body)
        return observed

    def current(self) -> Observed:
        """The table as the last change or read-back left it, while the generation says
        nothing happened since; else read back."""
        quiet = self.quiet
        if quiet is not None and self._generation() == quiet.generation:
            return quiet.observed
        return self.observe()

    def _known_at(self, before: int | None) -> Known | None:
        """``self.known`` if the generation was its own before the listing and still is."""
        known = self.known
        if known is None or before is None or before != known.generation:
            return None
        return known if self._generation() == before else None

    def _recall(self, known: Known, observed: Observed, body: Json) -> bool:
        """Set ``body``'s elements into ``observed`` from ``known``, if it has them."""
        name = body["name"]
        if known.handles.get(name) != body.get("handle") or "timeout" in body.get("flags", []):
            return False
        observed.tagged[name] = dict(known.tagged.get(name, {}))
        observed.elements[name] = dict(known.elements.get(name, {}))
        self.recalled.add(name)
        return True

    def known_now(self) -> Known | None:
        """What the kernel's address and port sets without timeouts hold now, when the
        last change or read-back stands for the kernel (the generation is its own), for a
        later process to start from (:attr:`known`). None: it does not stand."""
        quiet = self.quiet
        if quiet is None and self.swapped is not None:
            swapped = self.swapped
            return swapped if self._generation() == swapped.generation else None
        if quiet is None or quiet.observed.objects is None:
            return None
        if self._generation() != quiet.generation:
            return None
        handles: dict[str, int] = {}
        for obj in quiet.observed.objects:
            body = obj.get("set")
            if (
                body is not None
                and isinstance(body.get("handle"), int)
                and width_of(body["type"]) is not None
                and "timeout" not in body.get("flags", [])
            ):
                handles[body["name"]] = body["handle"]
        if any(
            elem.timeout is not None or elem.expires is not None
            for name in handles
            for elem in quiet.observed.elements.get(name, {}).values()
        ):
            return None
        return Known(
            quiet.generation,
            handles,
            {name: dict(quiet.observed.tagged.get(name, {})) for name in handles},
            {name: dict(quiet.observed.elements.get(name, {})) for name in handles},
        )

    def _dumps_elements(self) -> bool:
        return self.sets is not None and getattr(self.backend, "list_structure", None) is not None

    def _elements_again(self, before: Observed) -> Observed:
        """``before``'s structure with every set's elements read again; while the table
        watch follows every transaction (a live journal), only the sets whose elements
        change without one (timeouts, the packet path's dynamic sets, sets of names): the
        others cannot have changed while the generation stood, and a dump of a large
        interval set costs the kernel minutes."""
        observed = Observed(objects=before.objects, types=dict(before.types))
        steady = self.journal is not None and self.journal.live
        for obj in before.objects or []:
            body = obj.get("set")
            if body is None:
                continue
            name = body["name"]
            if steady and name in shapes([obj]) and not _timed(before.elements.get(name, {})):
                observed.tagged[name] = dict(before.tagged.get(name, {}))
                observed.elements[name] = dict(before.elements.get(name, {}))
                continue
            self._read_elements(observed, body)
        return observed

    def _read_elements(self, observed: Observed, body: Json) -> None:
        """Set ``body``'s elements into ``observed``: address and port sets by a dump into
        packed spans; a set with timeouts (its elements carry them) or of names, listed."""
        assert self.sets is not None
        name, set_type = body["name"], body["type"]
        flags = body.get("flags", [])
        width = width_of(set_type)
        if width is None or "timeout" in flags:
            full = self.backend.list_set(name)
            if full is not None:
                one = observed_from_listing([{"set": full}])
                observed.elements[name] = one.elements.get(name, {})
                observed.tagged[name] = one.tagged.get(name, {})
            return
        interval = "interval" in flags
        runtime: dict[str, Element] = {}
        tagged: dict[str, Elements] = {}
        for tag, spans in self.sets.dump(name, width=width, interval=interval).items():
            items = Elements(set_type, interval, spans)
            if tag in (PROFILE_TAG, HUB_TAG):
                tagged[tag] = items
            else:
                runtime.update((text, Element(text, tag)) for text in items)
        observed.elements[name] = runtime
        observed.tagged[name] = tagged

    def plan(self, desired: Desired) -> Plan:
        return make_plan(desired, self.observe())

    def plan_segments(self, desired: Desired) -> SegmentPlan | None:
        """What the segments' links need (None: segments are not managed here, or this
        policy leaves them as they are). KernelError if a segment cannot be put in place."""
        if self.links is None or desired.segments is None:
            return None
        wanted = desired_segments(desired.segments)
        try:
            return plan_segments(wanted, self.links.observe(wanted))
        except SegmentError as exc:
            raise KernelError(str(exc)) from None

    def apply(self, desired: Desired) -> tuple[Plan, SegmentPlan | None]:
        """Apply ``desired``: the segments' new links and addresses, the table in one
        transaction, then what segments no longer need. On KernelError before the table's
        transaction went through, the kernel keeps what it had (links made are removed)."""
        plan, _observed, segments = self.converge(desired)
        return plan, segments

    def converge(self, desired: Desired) -> tuple[Plan, Observed, SegmentPlan | None]:
        segments = self.plan_segments(desired)
        done = self._segment_steps(segments.apply) if segments is not None else []
        self.swapped = None
        try:
            generation = self._generation()
            quiet = self.quiet
            if (
                generation is not None
                and quiet is not None
                and quiet.generation == generation
                and self.clock() < quiet.until
            ):
                observed = quiet.observed  # the kernel has not changed since
                plan = Plan() if quiet.desired is desired else make_plan(desired, observed)
            elif (
                generation is not None
                and quiet is not None
                and quiet.generation == generation
                and self._dumps_elements()
            ):
                # no structural change can have happened (it would move the generation):
                # only the elements are read again (timeouts end without a new generation)
                self.quiet = None
                observed = self._elements_again(quiet.observed)
                plan = make_plan(desired, observed)
            else:
                self.quiet = None
                self._follow(quiet, generation)
                observed = self.observe()
                self.listings += 1
                plan = make_plan(desired, observed)
            if plan.changed:
                self.quiet = None
                if plan.create or plan.swap:
                    self.set_shapes.clear()
                self._carry_out(plan, desired, observed)
                self._after_delta(generation, plan, desired, observed)
                if plan.swap:
                    self.swapped = self._known_after_swap(generation, plan, desired, observed)
            elif generation is not None and (
                self.quiet is None or self.quiet.desired is not desired
            ):
                until = self.quiet.until if self.quiet else self._quiet_until(observed)
                self.quiet = Quiet(generation, desired, observed, until)
        except BaseException:
            self.quiet = None
            self._undo(done)
            raise
        if segments is not None and segments.remove:
            self._segment_steps(segments.remove, undo=False)
        return plan, observed, segments

    def _carry_out(self, plan: Plan, desired: Desired, observed: Observed) -> None:
        """Run ``plan``: one libnftables transaction, then the element deltas that go
        through ``sets`` (chunked)."""
        packed = self._netlink_sets(plan, desired, observed)
        self.refilled = set()
        if not packed:
            self.backend.run(transaction(plan, desired, observed))
            self.transactions = 1
            return
        rest = Plan(
            create=plan.create,
            swap=plan.swap,
            structure_diff=plan.structure_diff,
            add={n: v for n, v in plan.add.items() if n not in packed},
            delete={n: v for n, v in plan.delete.items() if n not in packed},
            trim=plan.trim,
            trimmed=plan.trimmed,
        )
        light = desired
        if plan.create:  # the new table's sets start empty; their elements follow
            light = replace(
                desired,
                elements=_emptied(desired, desired.elements, packed),
                hub=None if desired.hub is None else _emptied(desired, desired.hub, packed),
            )
        self.transactions = 0
        self.created = None
        if rest.changed:
            self.backend.run(transaction(rest, light, observed))
            self.transactions = 1
        if plan.create and self._generation() is not None:
            # read back now, while the sets to fill are empty (a listing's cost follows
            # the elements): with what is sent next, it stands for the kernel
            self.created = self.observe()
        assert self.sets is not None
        refill = set() if plan.create else self._refills(plan, desired, observed, packed)
        self.refilled = refill
        for name in sorted(packed):
            add, delete = plan.add.get(name), plan.delete.get(name)
            shape = add if add is not None else delete
            assert shape is not None and shape.spans is not None
            width, interval = shape.spans.width, shape.interval
            if name in refill:  # one transaction: the set never seen empty or half filled
                whole = desired.elements.get(name) or desired.empty(name)
                self.transactions += self.sets.apply(
                    name,
                    width=width,
                    interval=interval,
                    add=whole.spans,
                    delete=None,
                    flush=True,
                    tag=PROFILE_TAG,
                )
                continue
            own, hub = self._split(desired, name, add)
            self.transactions += self.sets.apply(
                name,
                width=width,
                interval=interval,
                add=own.spans if own else None,
                delete=delete.spans if delete else None,
                tag=PROFILE_TAG,
            )
            if hub:
                self.transactions += self.sets.apply(
                    name, width=width, interval=interval, add=hub.spans, delete=None, tag=HUB_TAG
                )

    def _refills(
        self, plan: Plan, desired: Desired, observed: Observed, packed: set[str]
    ) -> set[str]:
        """The sets of ``packed`` whose change costs less as a flush and refill than as a
        delta (:func:`refill_cheaper`): only sets that hold the profile's elements and
        nothing else (a flush would take run-time and hub elements with it)."""
        chosen: set[str] = set()
        for name in packed & self._wholly_profile(plan, desired, observed):
            wanted = desired.elements.get(name)
            if wanted is None or wanted.spans is None:
                continue
            add, delete = plan.add.get(name), plan.delete.get(name)
            adds, deletes = len(add) if add else 0, len(delete) if delete else 0
            interval = wanted.interval
            if not refill_cheaper(interval, adds, deletes, len(wanted.spans)):
                continue  # spans are at most elements: the delta is cheaper, no count needed
            if interval or refill_cheaper(interval, adds, deletes, len(wanted)):
                chosen.add(name)
        return chosen

    @staticmethod
    def _split(
        desired: Desired, name: str, items: Elements | None
    ) -> tuple[Elements | None, Elements | None]:
        """``items`` parted into the profile's and the hub's (no pass over them when the
        policy has no hub elements)."""
        if items is None:
            return None, None
        if desired.hub is None:
            return items, None
        return split_tags(desired, name, items)

    def _netlink_sets(self, plan: Plan, desired: Desired, observed: Observed) -> set[str]:
        """The sets whose element delta goes through ``sets``: packed elements, no run-time
        element to trim in the same transaction, and no structural change (what a swap
        changes, elements included, goes in its one transaction)."""
        if self.sets is None or getattr(self.backend, "list_structure", None) is None:
            return set()
        if plan.swap:  # the kept sets' delta goes in the swap's one transaction: old or new
            return set()
        names = set(plan.add) | set(plan.delete)
        return {
            name
            for name in names
            if name not in plan.trim
            and all(
                items.spans is not None
                for items in (plan.add.get(name), plan.delete.get(name))
                if items is not None
            )
        }

    def _after_delta(
        self, before: int | None, plan: Plan, desired: Desired, observed: Observed
    ) -> None:
        """After an element delta, the read-back it started from with the delta carried
        out stands for the kernel, if ours was the only transaction in between (the
        generation moved by one): the next read-back need not list a large set again."""
        if before is None or plan.swap or (plan.create and self.created is None):
            return
        if plan.create:
            assert self.created is not None
            observed, self.created = self.created, None
        timed = {
            body["name"] for obj in desired.objects if "timeout" in (body := obj.get("set", {}))
        }
        if timed & set(plan.add) or self._generation() != before + self.transactions:
            return  # elements the kernel will time out itself, or another writer
        after = Observed(
            objects=observed.objects,
            elements={name: dict(items) for name, items in observed.elements.items()},
            types=observed.types,
            tagged={name: dict(tags) for name, tags in observed.tagged.items()},
        )
        whole = self._wholly_profile(plan, desired, observed)
        for name in whole:  # the set holds the profile's elements, nothing else
            after.tagged[name] = {PROFILE_TAG: desired.elements.get(name) or desired.empty(name)}
        for name, stale in plan.delete.items():
            if name in whole:
                continue
            tags = after.tagged.setdefault(name, {})
            for tag, items in tags.items():
                tags[tag] = without(items, stale)
        for name, gone in plan.trim.items():
            for elem in gone:
                after.elements[name].pop(elem.text, None)
        for name, fresh in plan.add.items():
            if name in whole:
                continue
            tags = after.tagged.setdefault(name, {})
            if plan.create and any(tags.values()):
                continue  # sent with the table: the read-back has them
            own, hub = split_tags(desired, name, fresh)
            for tag, part in ((PROFILE_TAG, own), (HUB_TAG, hub)):
                if part:
                    tags[tag] = joined(tags[tag], part) if tag in tags else part
        for name, kept in plan.trimmed.items():
            for elem in kept:
                after.elements.setdefault(name, {})[elem.text] = elem
        self.quiet = Quiet(before + self.transactions, desired, after, self._quiet_until(after))

    def _known_after_swap(
        self, before: int | None, plan: Plan, desired: Desired, observed: Observed
    ) -> Known | None:
        """After a structural change that was the only transaction since ``observed``: the
        sets it kept (the same handle), with what they hold now: their elements as they
        were if the change left them alone, the policy's elements if they hold only those.
        New and redefined sets are left out (read again by the next process)."""
        structure = getattr(self.backend, "list_structure", None)
        if before is None or structure is None or self.sets is None:
            return None
        after = before + self.transactions
        if self._generation() != after:
            return None
        listing: list[Json] | None = structure()  # the structure only: the new handles
        old = {
            body["name"]: body.get("handle")
            for obj in observed.objects or []
            if (body := obj.get("set")) is not None
        }
        whole = self._wholly_profile(plan, desired, observed)
        known = Known(after, {}, {}, {})
        for obj in listing or []:
            body = obj.get("set")
            if body is None or width_of(body["type"]) is None:
                continue
            name, handle = body["name"], body.get("handle")
            if "timeout" in body.get("flags", []) or not isinstance(handle, int):
                continue
            if old.get(name) != handle or name in plan.trim:
                continue
            if name in plan.add or name in plan.delete:
                if name not in whole:
                    continue
                wanted = desired.elements.get(name) or desired.empty(name)
                known.tagged[name] = {PROFILE_TAG: wanted}
                known.elements[name] = {}
            else:
                known.tagged[name] = dict(observed.tagged.get(name, {}))
                known.elements[name] = dict(observed.elements.get(name, {}))
            known.handles[name] = handle
        return known if self._generation() == after else None

    @staticmethod
    def _wholly_profile(plan: Plan, desired: Desired, observed: Observed) -> set[str]:
        """The changed sets that hold only the profile's elements once ``plan`` is carried
        out (a profile-only policy, no run-time element in them, nothing trimmed): their
        state after is the policy's elements themselves, without a pass over them."""
        if desired.hub is not None:
            return set()
        return {
            name
            for name in set(plan.add) | set(plan.delete)
            if name not in plan.trim
            and not runtime_elements(desired, observed, name)
            and set(observed.tagged.get(name, {})) <= {PROFILE_TAG}
        }

    def generation(self) -> int | None:
        """The kernel's ruleset generation (None: the backend cannot tell)."""
        return self._generation()

    def _generation(self) -> int | None:
        read = getattr(self.backend, "generation", None)
        return read() if read is not None else None

    def _quiet_until(self, observed: Observed) -> float:
        """When the read-back ``observed`` stops standing for the kernel: the first element
        timeout to end (the kernel removes it without a new generation), or QUIET_SECONDS."""
        left = QUIET_SECONDS
        for elements in observed.elements.values():
            for elem in elements.values():
                if elem.expires is not None and elem.expires < left:
                    left = float(elem.expires)
        return self.clock() + left

    def _segment_steps(self, steps: list[Step], undo: bool = True) -> list[Step]:
        if not steps:
            return []
        assert self.links is not None
        try:
            return self.links.run(steps)
        except SegmentStepError as exc:
            if undo:
                self._undo(exc.done)
            raise

    def _undo(self, done: list[Step]) -> None:
        """Take back what the segment steps made (best effort: the error that led here is
        the one reported)."""
        if not done or self.links is None:
            return
        with contextlib.suppress(KernelError):
            self.links.run(undo_steps(done))

    # ---- run-time set changes ---------------------------------------------------------

    def set_info(self, name: str, elements: bool = True) -> SetInfo:
        """A set's type and flags, and its elements unless ``elements`` is False (which
        costs the same whatever the set's size)."""
        body = self.backend.list_set(name, elements)
        if body is None:
            raise UsageError(f"set {name!r}: no such set in table {TABLE_FAMILY} {TABLE_NAME}")
        return SetInfo(
            name=name,
            type=body["type"],
            flags=list(body.get("flags", [])),
            elements=[parse_element(e) for e in body.get("elem", [])],
            size=body.get("size"),
        )

    def set_elements(
        self, name: str, values: list[str], timeout: float | None, merge: bool = False
    ) -> list[object]:
        """The JSON elements for ``values``, checked against the set's type read back; with
        ``merge``, in an interval set, overlapping and adjacent values merged (the kernel
        refuses overlapping intervals in one change)."""
        info = self.set_shapes.get(name)
        if info is None:
            info = self.set_shapes[name] = self.set_info(name, elements=False)
        if not values:
            raise UsageError(f"set {name!r}: no element given")
        if timeout is not None and "timeout" not in info.flags:
            raise UsageError(f"set {name!r} has no timeout flag: --timeout is not possible")
        texts: list[str] = []
        for value in values:
            try:
                texts.append(canonical_element(info.type, "interval" in info.flags, value))
            except ValueError as exc:
                raise UsageError(f"set {name!r} ({info.type}): {exc}") from None
        texts = list(dict.fromkeys(texts))  # a value given twice is one element
        width = width_of(info.type)
        if merge and "interval" in info.flags and width is not None and len(texts) > 1:
            spans = Spans.of(width, (element_bounds(info.type, t) for t in texts))
            texts = [span_text(info.type, first, last) for first, last in spans]
        return [element_json(info.type, text, timeout) for text in texts]

    def set_add(self, name: str, values: list[str], timeout: float | None = None) -> None:
        elements = self.set_elements(name, values, timeout, merge=True)
        try:
            self.backend.run([element_command("add", name, elements)])
        except KernelError as exc:
            self.set_shapes.pop(name, None)
            if SET_FULL not in str(exc):
                raise
            size = self.set_info(name, elements=False).size
            raise UsageError(
                f"set {name!r} is full (size {size}): {len(values)} element(s) not added, "
                "nothing changed"
            ) from None

    def set_del(self, name: str, values: list[str]) -> None:
        elements = self.set_elements(name, values, None)
        try:
            self.backend.run([element_command("delete", name, elements)])
        except KernelError:
            self.set_shapes.pop(name, None)
            raise
