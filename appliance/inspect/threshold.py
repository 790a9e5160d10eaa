"""``threshold`` state, with Suricata's semantics.

- ``limit``: alert on the first ``count`` matches in each ``seconds`` window;
- ``threshold``: alert on every ``count``-th match within the window;
- ``both``: alert once per window, when the ``count``-th match arrives;
- ``detection_filter``: alert on every match after the ``count``-th in the window.

Windows start at the first match of a tracked address. State is bounded: past ``max_entries``
tracked (rule, address) pairs, the oldest are forgotten.
"""

from __future__ import annotations

from collections import OrderedDict

from appliance.inspect.rules import Threshold


class ThresholdState:
    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        # (window start, matches in it) by (rule, address): tuples of numbers, which the
        # garbage collector stops tracking, so that many tracked addresses cost it nothing
        self._entries: OrderedDict[tuple[int, bytes], tuple[float, int]] = OrderedDict()

    def allow(self, sid: int, threshold: Threshold, src: bytes, dst: bytes, ts: float) -> bool:
        """Whether a match of rule ``sid`` at ``ts`` raises an alert."""
        entries = self._entries
        key = (sid, src if threshold.track == "by_src" else dst)
        entry = entries.get(key)
        if entry is None or ts - entry[0] >= threshold.seconds or ts < entry[0]:
            start = ts
            seen = 1
            entries[key] = (start, seen)
            if len(entries) > self.max_entries:
                entries.popitem(last=False)
        else:
            entries.move_to_end(key)
            start = entry[0]
            seen = entry[1] + 1
            entries[key] = (start, seen)
        kind = threshold.type
        if kind == "detection_filter":
            return seen > threshold.count
        if kind == "limit":
            return seen <= threshold.count
        if kind == "threshold":
            if seen >= threshold.count:
                if key in entries:
                    entries[key] = (start, 0)
                return True
            return False
        return seen == threshold.count  # both
